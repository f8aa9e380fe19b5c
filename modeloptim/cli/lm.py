"""What the causal-LM commands (quantize, eval, export) share: the model, its text, its size.

The model is a local Hugging Face folder or the built-in SmolLM2-135M; text is a file (first
half calibrates, second half evaluates) or the standard library's docstrings (disjoint
halves). Windows are ``[count, seq_len]`` token ids.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeloptim.cli.common import positive_int
from modeloptim.cli.main import CliError

__all__ = ["LoadedLM", "add_model_arguments", "load_lm", "load_texts", "weight_memory", "windows"]


def add_model_arguments(parser: argparse.ArgumentParser, *, evaluate: bool = True) -> None:
    """``--model``, ``--text``, ``--seq-len``, ``--json`` and (``evaluate``) ``--eval-tokens``."""
    parser.add_argument(
        "--model", default=None, help="local HF model folder (default: built-in SmolLM2-135M)"
    )
    parser.add_argument(
        "--text",
        type=Path,
        default=None,
        help="UTF-8 text; first half calibrates, second half evaluates "
        "(default: standard-library docstrings, disjoint halves)"
        if evaluate
        else "UTF-8 text; its first half calibrates (default: standard-library docstrings)",
    )
    if evaluate:
        parser.add_argument(
            "--eval-tokens",
            type=positive_int,
            default=1024,
            help="tokens scored for perplexity (default 1024)",
        )
    parser.add_argument(
        "--seq-len", type=positive_int, default=256, help="tokens per window (default 256)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def load_texts(path: Path | None) -> tuple[str, str]:
    """``(calibration text, evaluation text)``: disjoint halves of a file or of the stdlib."""
    if path is None:
        from modeloptim.utils.text_corpus import stdlib_docstring_corpus

        return stdlib_docstring_corpus("calib"), stdlib_docstring_corpus("eval")
    from modeloptim.utils.text_corpus import read_text

    text = read_text(path)
    half = len(text) // 2
    return text[:half], text[half:]


def windows(tokenizer: Any, text: str, seq_len: int, count: int, what: str) -> Any:
    """Token windows ``[count, seq_len]`` with a one-line error when the text is too short."""
    from modeloptim.torch.utils.perplexity import token_windows

    try:
        return token_windows(tokenizer, text, seq_len, count)
    except ValueError as err:
        raise CliError(f"{what}: {err}") from None


@dataclass
class LoadedLM:
    """A loaded model with its token windows.

    Attributes:
        model: the causal LM (``transformers`` model).
        tokenizer: its tokenizer.
        calib: calibration ids ``[calib_size, seq_len]``, or ``None`` when not asked for.
        eval: evaluation ids ``[eval_tokens // seq_len, seq_len]``, or ``None``.
    """

    # Any, not ``Tensor | None``: each command asks for the windows it then uses.
    model: Any
    tokenizer: Any
    calib: Any
    eval: Any


def load_lm(args: argparse.Namespace, *, calib_size: int | None, evaluate: bool) -> LoadedLM:
    """Load ``args.model`` and cut ``args.text`` into the windows a command needs.

    Args:
        args: parsed `add_model_arguments` (``eval_tokens`` only read when ``evaluate``).
        calib_size: calibration windows to cut, or ``None`` for none.
        evaluate: also cut ``max(1, eval_tokens // seq_len)`` evaluation windows.

    Raises:
        CliError: a text half is too short for the windows.
    """
    from modeloptim.torch.utils.default_model import load_model

    model, tokenizer = load_model(args.model)
    calib_text, eval_text = load_texts(args.text)
    calib = evalw = None
    if calib_size is not None:
        calib = windows(tokenizer, calib_text, args.seq_len, calib_size, "calibration text")
    if evaluate:
        n_eval = max(1, args.eval_tokens // args.seq_len)
        evalw = windows(tokenizer, eval_text, args.seq_len, n_eval, "evaluation text")
    return LoadedLM(model, tokenizer, calib, evalw)


def weight_memory(model: Any) -> dict[str, float]:
    """Storage of all parameters, each shared tensor once.

    Quantized weights count at their format's bits per element (scales included).

    Returns:
        ``{"megabytes": ..., "effective_bits": ...}``.
    """
    from modeloptim.torch.quantization.nn import SequentialQuantizer
    from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule

    bits_of: dict[int, float] = {}
    for layer in model.modules():
        if isinstance(layer, QuantModule):
            for quantizer, weight in layer.weight_quantizer_pairs():
                # W4A8-style chains store the first quantizer's codes (the rest are scales).
                first = quantizer[0] if isinstance(quantizer, SequentialQuantizer) else quantizer
                if quantizer.is_enabled:
                    bits_of[id(weight)] = float(first.format.bits_per_element)  # type: ignore[union-attr,arg-type]
    total_bits, numel = 0.0, 0
    for p in {id(p): p for p in model.parameters()}.values():
        total_bits += p.numel() * bits_of.get(id(p), p.element_size() * 8)
        numel += p.numel()
    return {"megabytes": total_bits / 8 / 2**20, "effective_bits": total_bits / max(numel, 1)}
