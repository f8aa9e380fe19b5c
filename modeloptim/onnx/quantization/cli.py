"""Command line of ONNX quantization (``modeloptim onnx-quantize`` and ``python -m``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modeloptim.onnx.cli_common import print_report, split_list

EXAMPLE = (
    "Example:\n"
    "  modeloptim onnx-quantize model.onnx --mode int8 --calibration-data calib.npz\n"
    "  modeloptim onnx-quantize encoder.onnx --mode int4 --method awq_clip --block-size 32"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the onnx-quantize arguments to ``parser``."""
    parser.add_argument("onnx_path", help="float32 ONNX model (never modified)")
    parser.add_argument(
        "--mode", dest="quantize_mode", default="int8", choices=["int8", "fp8", "int4"]
    )
    parser.add_argument(
        "--calibration-data",
        default=None,
        help=".npy (single input) or .npz (input name -> array); default: random with a warning",
    )
    parser.add_argument(
        "--method",
        dest="calibration_method",
        default=None,
        help="int8/fp8: max|entropy|percentile; int4: rtn|awq_lite|awq_clip",
    )
    parser.add_argument("--output", dest="output_path", default=None, help="output .onnx path")
    parser.add_argument("--op-types", default=None, help="comma-separated op types to quantize")
    parser.add_argument("--exclude-nodes", default=None, help="comma-separated node names/patterns")
    parser.add_argument("--high-precision-dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--block-size", type=int, default=128, help="int4 block size")
    parser.add_argument(
        "--matmul-nbits", action="store_true", help="int4: write onnxruntime MatMulNBits"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="calibration batch size")
    parser.add_argument(
        "--activation-type",
        default=None,
        choices=["int8", "uint8", "fp8"],
        help="int8 mode: uint8 (asymmetric, onnxruntime CPU; default) or int8 (symmetric, "
        "zero point 0: pass it for TensorRT)",
    )
    parser.add_argument(
        "--placement",
        dest="qdq_placement",
        default=None,
        choices=["units", "inputs"],
        help="units: DQ -> op -> Q that runtimes fuse (int8 default); inputs: Q/DQ on inputs "
        "only (fp8 default)",
    )
    parser.add_argument(
        "--skip-sensitive",
        type=int,
        default=0,
        help="keep this many most sensitive nodes (measured) in float",
    )
    parser.add_argument(
        "--sensitivity-metric",
        default="local",
        choices=["local", "output"],
        help="rank nodes by their own output error (local) or the model's (output)",
    )
    parser.add_argument(
        "--sensitivity-budget",
        type=float,
        default=None,
        help="keep float the fewest most sensitive nodes whose rest fits this error budget",
    )
    parser.add_argument(
        "--bias-correction",
        action="store_true",
        help="shift quantized Conv/Gemm/MatMul biases by their mean error on calibration data",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Execute the command from parsed ``args``; returns the exit code."""
    from modeloptim.onnx.quantization import quantize

    result = quantize(
        args.onnx_path,
        quantize_mode=args.quantize_mode,
        calibration_data=args.calibration_data,
        calibration_method=args.calibration_method,
        output_path=args.output_path,
        op_types_to_quantize=split_list(args.op_types),
        nodes_to_exclude=split_list(args.exclude_nodes),
        high_precision_dtype=args.high_precision_dtype,
        block_size=args.block_size,
        use_matmul_nbits=args.matmul_nbits,
        calibration_batch_size=args.batch_size,
        activation_type=args.activation_type,
        qdq_placement=args.qdq_placement,
        skip_sensitive_nodes=args.skip_sensitive,
        sensitivity_metric=args.sensitivity_metric,
        sensitivity_budget=args.sensitivity_budget,
        bias_correction=args.bias_correction,
    )
    rows = {
        "output": result.output_path,
        "mode": result.quantize_mode,
        "calibration": result.calibration_method,
        "opset": result.opset,
        "quantized nodes": len(result.quantized_nodes),
        "skipped nodes": len(result.skipped),
        "size (MB)": f"{result.input_bytes / 1e6:.2f} -> {result.output_bytes / 1e6:.2f}",
    }
    print_report("onnx-quantize", rows, args.json, result.to_dict())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modeloptim.onnx.quantization``: same arguments as ``onnx-quantize``."""
    parser = argparse.ArgumentParser(
        prog="python -m modeloptim.onnx.quantization",
        description="Post-training quantization of an ONNX model (int8, fp8, int4).",
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
