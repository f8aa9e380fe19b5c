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
import json
import time
from pathlib import Path
from typing import Any

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


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    from modeloptim.cli.commands.quantize import FORMATS

    p = subparsers.add_parser(
        "export",
        help="quantize a causal LM and export a deployable checkpoint",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="local HF model folder (default: SmolLM2-135M)")
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
    p.add_argument("--text", type=Path, default=None, help="calibration text (default: stdlib)")
    p.add_argument("--calib-size", type=_positive_int, default=4, help="windows (default 4)")
    p.add_argument("--seq-len", type=_positive_int, default=256, help="tokens/window (256)")
    p.add_argument("--dtype", choices=_DTYPES, default=None, help="dtype of float tensors")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
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
    from modeloptim.cli.commands.quantize import FORMATS, load_texts, windows
    from modeloptim.torch.export import export_hf_checkpoint
    from modeloptim.torch.utils import default_model

    if args.text is not None and not args.text.is_file():
        raise CliError(f"--text: file {str(args.text)!r} does not exist")
    _check_output(args.output)
    config = _config(args)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    model, tokenizer = default_model.load_model(args.model)
    calib_text, _ = load_texts(args.text)
    calib = windows(tokenizer, calib_text, args.seq_len, args.calib_size, "calibration text")
    seconds["load"] = round(time.perf_counter() - start, 3)

    def forward_loop(m: Any) -> None:
        with torch.no_grad():
            for row in calib:
                m(input_ids=row[None])

    start = time.perf_counter()
    mtq.quantize(model, config, forward_loop)
    seconds["quantize"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
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
    seconds["export"] = round(time.perf_counter() - start, 3)
    out = {
        "model": args.model or "smollm2 (built-in SmolLM2-135M-Instruct)",
        "format": args.format,
        "preset": FORMATS[args.format],
        "algorithm": config.algorithm.method,
        **report.as_dict(),
        "seconds": {**seconds, "total": round(sum(seconds.values()), 3)},
    }
    _print(out, args.json)
    return 0


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"modeloptim export: {report['model']} -> {report['export_dir']}")
    table.add_column("field")
    table.add_column("value")
    for key in ("format", "layout", "quant_algo", "kv_cache_quant_algo", "quantized_layers"):
        table.add_row(key, str(report[key]))
    table.add_row("excluded", ", ".join(report["excluded"]) or "-")
    table.add_row("checkpoint size (MB)", f"{report['weight_bytes'] / 2**20:.1f}")
    table.add_row("bits / quantized weight", f"{report['quantized_weight_bits']:.3f}")
    table.add_row("files", ", ".join(report["files"]))
    table.add_row("time (s)", ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()))
    Console().print(table)
