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

from modeloptim.cli.commands.quantize import FORMATS
from modeloptim.cli.common import (
    StageTimer,
    add_command,
    check_text_file,
    format_seconds,
    model_label,
    print_json,
)
from modeloptim.cli.lm import add_model_arguments, load_lm, weight_memory
from modeloptim.cli.main import CliError

__all__ = ["register", "run_eval"]

EXAMPLE = """\
examples:
  modeloptim eval                              # perplexity of the built-in SmolLM2-135M
  modeloptim quantize --format int8 --output q/ && modeloptim eval --quantized q/ --json
"""


def register(subparsers: Any) -> None:
    """Add the ``eval`` subcommand."""
    p = add_command(
        subparsers,
        "eval",
        help="perplexity of a causal LM (optionally a saved quantized state)",
        description=__doc__,
        epilog=EXAMPLE,
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


def run_eval(args: argparse.Namespace) -> int:
    """Run ``modeloptim eval``; prints the report, returns the exit code."""
    import modeloptim.torch.quantization as mtq
    from modeloptim.torch.utils.perplexity import perplexity

    check_text_file(args.text)
    saved = _read_quant_dir(args.quantized) if args.quantized is not None else None
    timer = StageTimer()
    with timer.stage("load"):
        lm = load_lm(args, calib_size=None, evaluate=True)
        model, evalw = lm.model, lm.eval
        if saved is not None:
            import modeloptim.torch.opt as mto

            mto.restore(model, saved[1])  # the saved state knows every quantizer's format
    with timer.stage("eval"), mtq.cache_quantized_weights(model):
        ppl = perplexity(model, evalw, progress=True)
    memory = weight_memory(model)
    seconds = timer.with_total()
    report: dict[str, Any] = {
        "model": model_label(args.model),
        "format": saved[0] if saved else None,
        "eval_tokens": int(evalw.numel()),
        "perplexity": ppl,
        "weight_mb": memory["megabytes"],
        "effective_bits": memory["effective_bits"],
        "seconds": seconds,
    }
    if args.json:
        print_json(report)
    else:
        print(
            f"{report['model']} ({report['format'] or 'float'}): perplexity {ppl:.3f} over "
            f"{report['eval_tokens']} tokens, weights {memory['megabytes']:.1f} MB "
            f"({memory['effective_bits']:.2f} bits/weight), " + format_seconds(seconds)
        )
    return 0
