"""``modeloptim onnx-quantize``: post-training quantization of ONNX models."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``onnx-quantize`` subcommand (heavy imports happen when it runs)."""
    from modeloptim.onnx.quantization.cli import EXAMPLE, add_arguments, run

    parser = subparsers.add_parser(
        "onnx-quantize",
        help="quantize an ONNX model (int8 / fp8 QDQ, int4 weight-only)",
        description="Post-training quantization of an ONNX model (int8, fp8, int4).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
