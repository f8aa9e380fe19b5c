"""``modeloptim eval``: perplexity of a causal LM, optionally of a saved quantized state.

``--quantized DIR`` reads what ``modeloptim quantize --output DIR`` wrote: ``mto.restore``
replays the recorded quantize mode (every quantizer's attributes) and loads the weights and
calibrated tensors, so the model computes exactly what was saved.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modeloptim.cli.commands.quantize import (
    FORMATS,
    StageTimer,
    add_model_arguments,
    load_texts,
    weight_memory,
    windows,
)
from modeloptim.cli.main import CliError

__all__ = ["register", "run_eval"]

EXAMPLE = """\
examples:
  modeloptim eval                              # perplexity of the built-in SmolLM2-135M
  modeloptim quantize --format int8 --output q/ && modeloptim eval --quantized q/ --json
"""


def register(subparsers: Any) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser(
        "eval",
        help="perplexity of a causal LM (optionally a saved quantized state)",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(p)
    p.add_argument(
        "--quantized", type=Path, default=None, help="directory written by quantize --output"
    )
    p.set_defaults(func=run_eval)


def _read_quant_dir(path: Path) -> tuple[str, Path]:
    meta_file, state_file = path / "quant_config.json", path / "modelopt.pth"
    if not (meta_file.is_file() and state_file.is_file()):
        raise CliError(
            f"--quantized: {str(path)!r} must hold quant_config.json and modelopt.pth "
            "(written by 'modeloptim quantize --output')"
        )
    try:
        fmt = json.loads(meta_file.read_text())["format"]
    except (ValueError, KeyError):
        raise CliError(f"--quantized: {str(meta_file)!r} is not a quantize config") from None
    if fmt not in FORMATS:
        raise CliError(f"--quantized: unknown format {fmt!r} in {str(meta_file)!r}")
    return fmt, state_file


def _apply_saved_quantization(model: Any, fmt: str, state_file: Path) -> None:
    import modeloptim.torch.opt as mto

    del fmt  # the saved state knows every quantizer's format
    mto.restore(model, state_file)


def run_eval(args: argparse.Namespace) -> int:
    """Run ``modeloptim eval``; prints the report, returns the exit code."""
    import modeloptim.torch.quantization as mtq
    from modeloptim.torch.utils.default_model import load_model
    from modeloptim.torch.utils.perplexity import perplexity

    if args.text is not None and not args.text.is_file():
        raise CliError(f"--text: file {str(args.text)!r} does not exist")
    saved = _read_quant_dir(args.quantized) if args.quantized is not None else None
    timer = StageTimer()
    with timer.stage("load"):
        model, tokenizer = load_model(args.model)
        if saved is not None:
            _apply_saved_quantization(model, *saved)
        _, eval_text = load_texts(args.text)
        n_eval = max(1, args.eval_tokens // args.seq_len)
        evalw = windows(tokenizer, eval_text, args.seq_len, n_eval, "evaluation text")
    with timer.stage("eval"), mtq.cache_quantized_weights(model):
        ppl = perplexity(model, evalw, progress=True)
    memory = weight_memory(model)
    seconds = {**timer.seconds, "total": round(sum(timer.seconds.values()), 3)}
    report: dict[str, Any] = {
        "model": args.model or "smollm2 (built-in SmolLM2-135M-Instruct)",
        "format": saved[0] if saved else None,
        "eval_tokens": int(evalw.numel()),
        "perplexity": ppl,
        "weight_mb": memory["megabytes"],
        "effective_bits": memory["effective_bits"],
        "seconds": seconds,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{report['model']} ({report['format'] or 'float'}): perplexity {ppl:.3f} over "
            f"{report['eval_tokens']} tokens, weights {memory['megabytes']:.1f} MB "
            f"({memory['effective_bits']:.2f} bits/weight), "
            + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
        )
    return 0
