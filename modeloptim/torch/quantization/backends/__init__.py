"""Real low-bit GEMM backends behind a registry chosen by weight format and hardware.

``quantized_linear(x, weight)`` runs ``x @ dequant(weight).T`` with the best backend that can
run here: FP8 via ``torch._scaled_mm`` (Ada/Hopper and newer), INT8 via ``torch._int_mm``,
INT4/NVFP4 weight-only via Triton kernels that read the packed weight, and otherwise the
dequantize-then-matmul fallback. Importing this package does not import Triton.
"""

from __future__ import annotations

from . import fallback, fp8, int8, w4a16
from .packing import pack_int4, pack_nibbles, unpack_int4, unpack_nibbles
from .registry import GEMM_BACKENDS, GemmBackend, GemmBackendRegistry, quantized_linear
from .weights import (
    QuantizedWeight,
    WeightFormat,
    quantize_fp8,
    quantize_int4,
    quantize_int8,
    quantize_nvfp4,
)

__all__ = [
    "GEMM_BACKENDS",
    "GemmBackend",
    "GemmBackendRegistry",
    "QuantizedWeight",
    "WeightFormat",
    "fallback",
    "fp8",
    "int8",
    "pack_int4",
    "pack_nibbles",
    "quantize_fp8",
    "quantize_int4",
    "quantize_int8",
    "quantize_nvfp4",
    "quantized_linear",
    "unpack_int4",
    "unpack_nibbles",
    "w4a16",
]
