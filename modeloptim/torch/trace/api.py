"""Convenience entry points: one call from a model and an example input to its groups."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from modeloptim.torch.trace.analyzer import analyze_symbols
from modeloptim.torch.trace.result import AnalysisResult, ChannelGroup
from modeloptim.torch.trace.symbols import SymMap
from modeloptim.torch.trace.tracer import recursive_trace

TraceContext = Callable[[nn.Module], contextlib.AbstractContextManager[Any]]
_CONTEXTS: list[TraceContext] = []


def register_trace_context(fn: TraceContext) -> TraceContext:
    """Register ``fn(model) -> context manager`` entered around tracing (plugins)."""
    _CONTEXTS.append(fn)
    return fn


def _load_plugins() -> None:
    if "transformers" in sys.modules:
        from modeloptim.torch.trace.plugins import huggingface  # noqa: F401


def normalize_example(example_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``tensor`` / ``(args...)`` / ``{kwargs}`` / ``(args, kwargs)`` -> ``(args, kwargs)``."""
    if isinstance(example_input, torch.Tensor):
        return (example_input,), {}
    if isinstance(example_input, dict):
        return (), dict(example_input)
    if isinstance(example_input, tuple | list):
        if (
            len(example_input) == 2
            and isinstance(example_input[0], tuple)
            and isinstance(example_input[1], dict)
        ):
            return tuple(example_input[0]), dict(example_input[1])
        return tuple(example_input), {}
    raise TypeError(
        "example_input: expected a tensor, a tuple of positional inputs, a dict of "
        f"keyword inputs or (args, kwargs), got {type(example_input).__name__}"
    )


@contextlib.contextmanager
def _contexts(model: nn.Module) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for fn in _CONTEXTS:
            stack.enter_context(fn(model))
        yield


def analyze(
    model: nn.Module,
    example_input: Any,
    concrete_args: dict[str, Any] | None = None,
    *,
    progress: bool = False,
) -> AnalysisResult:
    """Trace ``model`` and analyze its symbols (see `analyze_symbols`).

    Args:
        model: the model (not modified).
        example_input: one forward's input: a tensor, a tuple of positional inputs, a dict
            of keyword inputs, or ``(args, kwargs)``.
        concrete_args: forward arguments to trace as constants.
        progress: show progress bars (tracing is one step; analysis goes node by node).

    Returns:
        The `AnalysisResult`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = normalize_example(example_input)
    _load_plugins()
    was_training = model.training
    threads = torch.get_num_threads()
    model.eval()
    # shape inference runs tiny forwards: extra threads only add contention
    torch.set_num_threads(1)
    try:
        with _contexts(model):
            sym_map = SymMap(model)  # checks parameter shapes first: the clearer message
            _check_forward(model, args, kwargs)
            if progress:
                print("tracing ...", file=sys.stderr, flush=True)
            gc = recursive_trace(model, concrete_args, example_inputs=(args, kwargs))
            return analyze_symbols(model, gc, sym_map, progress=progress)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)


@torch.no_grad()
def _check_forward(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        model(*args, **kwargs)
    except Exception as err:
        raise ValueError(
            f"example_input: the model's forward failed on it ({type(err).__name__}:"
            f" {str(err).splitlines()[0][:200]})"
        ) from err


def dependency_groups(
    model: nn.Module, example_input: Any, *, frozen: bool = False
) -> list[ChannelGroup]:
    """Groups of channels tied across layers.

    Args:
        model: the model (not modified).
        example_input: see `analyze`.
        frozen: return the frozen groups (each with ``reasons``) instead of the searchable.

    Returns:
        Each group with its member layers (tensor, dim, symbol) and size.
    """
    res = analyze(model, example_input)
    return res.frozen_groups if frozen else res.searchable_groups
