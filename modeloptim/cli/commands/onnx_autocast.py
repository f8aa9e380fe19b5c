"""``modeloptim onnx-autocast``: FP16/BF16 conversion of ONNX models."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``onnx-autocast`` subcommand (heavy imports happen when it runs)."""
    from modeloptim.onnx.autocast.cli import EXAMPLE, add_arguments, run

    parser = subparsers.add_parser(
        "onnx-autocast",
        help="convert an ONNX model to fp16/bf16 with measured fp32 fallbacks",
        description="Convert an ONNX model to FP16/BF16, keeping unsafe nodes in FP32.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
