"""``modeloptim export``: quantize a causal LM and write a deployable quantized checkpoint.

The model (default: the built-in SmolLM2-135M) is quantized with ``--format``, calibrated on
``--calib-size`` windows of text (standard-library docstrings, or ``--text FILE``), then
written with real packed weights and scales in the ModelOpt layout (TensorRT-LLM / vLLM /
SGLang) or, with ``--layout compressed-tensors``, in the compressed-tensors layout. Presets
whose calibration algorithm is not built yet (AWQ, SmoothQuant) need ``--algorithm max``
(round-to-nearest with max calibration).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modeloptim.cli.common import (
    StageTimer,
    add_command,
    check_text_file,
    format_seconds,
    positive_int,
    print_json,
    print_table,
    token_forward_loop,
)
from modeloptim.cli.lm import add_model_arguments, load_lm
from modeloptim.cli.main import CliError

__all__ = ["register", "run_export"]

EXAMPLE = """\
examples:
  modeloptim export --output smollm2-fp8                 # built-in model, FP8, ModelOpt layout
  modeloptim export --format nvfp4 --output out --json
  modeloptim export --model ./llama --format int4_awq --algorithm max --output out-int4
  modeloptim export --format fp8 --layout compressed-tensors --output out-ct
"""

_DTYPES = ("float32", "bfloat16", "float16")


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    from modeloptim.cli.commands.quantize import FORMATS

    p = add_command(
        subparsers,
        "export",
        help="quantize a causal LM and export a deployable checkpoint",
        description=__doc__,
        epilog=EXAMPLE,
    )
    add_model_arguments(p, evaluate=False)
    p.add_argument("--format", choices=sorted(FORMATS), default="fp8", help="default fp8")
    p.add_argument(
        "--layout",
        choices=["modelopt", "compressed-tensors"],
        default="modelopt",
        help="checkpoint layout (default modelopt)",
    )
    p.add_argument("--output", type=Path, required=True, help="export folder (replaced atomically)")
    p.add_argument(
        "--algorithm",
        choices=["preset", "max"],
        default="preset",
        help="calibration: the preset's algorithm, or max (round-to-nearest)",
    )
    p.add_argument("--calib-size", type=positive_int, default=4, help="windows (default 4)")
    p.add_argument("--dtype", choices=_DTYPES, default=None, help="dtype of float tensors")
    p.set_defaults(func=run_export)


def _config(args: argparse.Namespace) -> Any:
    import modeloptim.torch.quantization as mtq
    from modeloptim.cli.commands.quantize import FORMATS

    preset = dict(mtq.get_preset(FORMATS[args.format]))
    if args.algorithm == "max":
        preset["algorithm"] = "max"
    config = mtq.QuantizeConfig.parse(preset)
    try:
        mtq.calibration_algorithms.get(config.algorithm.method)
    except NotImplementedError as err:
        raise CliError(f"{err} (use --algorithm max for round-to-nearest)") from None
    return config


def _check_output(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CliError(f"--output: {str(path)!r} exists and is not a directory")
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CliError(f"--output: {str(parent)!r} is not a directory")


def run_export(args: argparse.Namespace) -> int:
    """Run ``modeloptim export``; prints the report, returns the exit code."""
    import torch

    import modeloptim.torch.quantization as mtq
    from modeloptim.cli.commands.quantize import report_header
    from modeloptim.torch.export import export_hf_checkpoint

    check_text_file(args.text)
    _check_output(args.output)
    config = _config(args)
    timer = StageTimer()
    with timer.stage("load"):
        lm = load_lm(args, calib_size=args.calib_size, evaluate=False)
    model, tokenizer = lm.model, lm.tokenizer
    with timer.stage("quantize"):
        mtq.quantize(model, config, token_forward_loop(lm.calib))
    with timer.stage("export"):
        try:
            report = export_hf_checkpoint(
                model,
                args.output,
                dtype=getattr(torch, args.dtype) if args.dtype else None,
                layout=args.layout,
                tokenizer=tokenizer if hasattr(tokenizer, "save_pretrained") else None,
            )
        except OSError as err:
            raise CliError(f"--output: {err}") from None
    out = {
        **report_header(args, config),
        **report.as_dict(),
        "seconds": timer.with_total(),
    }
    _print(out, args.json)
    return 0


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    rows = [
        (key, str(report[key]))
        for key in ("format", "layout", "quant_algo", "kv_cache_quant_algo", "quantized_layers")
    ]
    rows += [
        ("excluded", ", ".join(report["excluded"]) or "-"),
        ("checkpoint size (MB)", f"{report['weight_bytes'] / 2**20:.1f}"),
        ("bits / quantized weight", f"{report['quantized_weight_bits']:.3f}"),
        ("files", ", ".join(report["files"])),
        ("time (s)", format_seconds(report["seconds"])),
    ]
    print_table(
        f"modeloptim export: {report['model']} -> {report['export_dir']}", ("field", "value"), rows
    )
