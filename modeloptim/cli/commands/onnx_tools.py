"""``modeloptim onnx-quantize`` and ``modeloptim onnx-autocast``: the ONNX tools.

Both are run by their package's own CLI module (``add_arguments``/``run``/``EXAMPLE``), which
also serves ``python -m modeloptim.onnx.quantization`` / ``python -m modeloptim.onnx.autocast``.
"""

from __future__ import annotations

from typing import Any

from modeloptim.cli.common import register_delegated

__all__ = ["ONNX_COMMANDS", "register"]

#: subcommand -> (module, one-line help, description)
ONNX_COMMANDS: dict[str, tuple[str, str, str]] = {
    "onnx-autocast": (
        "modeloptim.onnx.autocast.cli",
        "convert an ONNX model to fp16/bf16 with measured fp32 fallbacks",
        "Convert an ONNX model to FP16/BF16, keeping unsafe nodes in FP32.",
    ),
    "onnx-quantize": (
        "modeloptim.onnx.quantization.cli",
        "quantize an ONNX model (int8 / fp8 QDQ, int4 weight-only)",
        "Post-training quantization of an ONNX model (int8, fp8, int4).",
    ),
}


def register(subparsers: Any) -> None:
    """Add every ONNX subcommand (their heavy imports happen when they run)."""
    for name, (module, help_, description) in ONNX_COMMANDS.items():
        register_delegated(subparsers, name, module, help=help_, description=description)
