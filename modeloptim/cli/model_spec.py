"""``--model`` for the structural commands (trace, prune): a zoo name or a factory."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["add_model_spec_arguments", "load_model_spec"]


def add_model_spec_arguments(parser: argparse.ArgumentParser, zoo_examples: str) -> None:
    """Add ``--model`` (zoo name or factory, required) and ``--input-shape``.

    Args:
        parser: the subcommand's parser.
        zoo_examples: zoo names shown in the help, e.g. ``"resnet, llama-tiny"``.
    """
    parser.add_argument(
        "--model",
        required=True,
        help=f"zoo name ({zoo_examples}, ...) or module:attr of a factory returning a model "
        "or (model, example_input)",
    )
    parser.add_argument(
        "--input-shape",
        default=None,
        help="comma-separated shape of a random float input (factories only)",
    )


def load_model_spec(spec: str, input_shape: str | None) -> tuple[Any, Any]:
    """Zoo name or ``module:attr`` factory -> ``(model, example_input)``.

    A factory may return ``(model, example_input)`` or just a model; then ``input_shape``
    (comma-separated ints) gives the shape of a random float example input.

    Raises:
        ValueError: the factory cannot be imported, or the input shape is missing or malformed.
    """
    if ":" not in spec:
        from modeloptim.torch.trace import zoo

        return zoo.build(spec)
    mod_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--model: cannot import {spec!r} ({err})") from err
    out = factory() if callable(factory) else factory
    if isinstance(out, tuple) and len(out) == 2:
        return out
    if input_shape is None:
        raise ValueError(f"--model: {spec} returned only a model; pass --input-shape")
    try:
        shape = [int(s) for s in input_shape.split(",")]
    except ValueError:
        raise ValueError(
            f"--input-shape: expected comma-separated ints, got {input_shape!r}"
        ) from None
    import torch

    return out, torch.randn(*shape)
