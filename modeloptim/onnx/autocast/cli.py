"""Command line of ONNX autocast (``modeloptim onnx-autocast`` and ``python -m``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modeloptim.onnx.cli_common import print_report, split_list

EXAMPLE = (
    "Example:\n"
    "  modeloptim onnx-autocast model.onnx --low-precision-type fp16 --reference-data ref.npz"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the onnx-autocast arguments to ``parser``."""
    parser.add_argument("onnx_path", help="float32 ONNX model (never modified)")
    parser.add_argument("--low-precision-type", default="fp16", choices=["fp16", "bf16"])
    parser.add_argument(
        "--reference-data", default=None, help=".npy/.npz inputs; default: random with a warning"
    )
    parser.add_argument("--output", dest="output_path", default=None, help="output .onnx path")
    parser.add_argument(
        "--no-keep-io-types", action="store_true", help="also convert graph inputs/outputs"
    )
    parser.add_argument("--max-relative-error", type=float, default=None, help="per-node limit")
    parser.add_argument("--exclude-nodes", default=None, help="comma-separated node names/patterns")
    parser.add_argument("--exclude-op-types", default=None, help="comma-separated op types")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Execute the command from parsed ``args``; returns the exit code."""
    from modeloptim.onnx.autocast import convert_to_mixed_precision

    report = convert_to_mixed_precision(
        args.onnx_path,
        low_precision_type=args.low_precision_type,
        keep_io_types=not args.no_keep_io_types,
        reference_data=args.reference_data,
        output_path=args.output_path,
        max_relative_error=args.max_relative_error,
        nodes_to_exclude=split_list(args.exclude_nodes),
        op_types_to_exclude=split_list(args.exclude_op_types),
    )
    rows = {
        "output": report.output_path,
        "type": report.low_precision_type,
        "converted nodes": len(report.converted),
        "kept fp32": len(report.kept),
        "casts inserted": report.casts_inserted,
    }
    for name, why in list(report.kept.items())[:20]:
        rows[f"kept {name}"] = why
    for name, err in report.output_max_rel_error.items():
        rows[f"output {name} max rel err"] = f"{err:.3g}"
    print_report("onnx-autocast", rows, args.json, report.to_dict())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modeloptim.onnx.autocast``."""
    parser = argparse.ArgumentParser(
        prog="python -m modeloptim.onnx.autocast",
        description="Convert an ONNX model to FP16/BF16, keeping unsafe nodes in FP32.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
