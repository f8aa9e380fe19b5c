"""Low-precision float types for autocast and their numpy emulation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LowPrecision:
    """A low-precision float type.

    Attributes:
        name: ``"fp16"`` or ``"bf16"``.
        onnx_type: ``onnx.TensorProto`` element type.
        schema_type: the type string in operator schemas (``"tensor(float16)"``).
        max_value: largest finite value; larger magnitudes overflow to inf.
        unit_roundoff: half the spacing of values near 1 (``2**-(mantissa bits + 1)``).
        min_opset: opset from which most operators accept the type.
        round: numpy ``float32 -> float32`` rounding through the type (round to nearest even).
        numpy_dtype: numpy dtype used to store initializers.
    """

    name: str
    onnx_type: int
    schema_type: str
    max_value: float
    unit_roundoff: float
    min_opset: int
    round: Callable[[np.ndarray], np.ndarray]
    numpy_dtype: Callable[[], np.dtype]


def _round_fp16(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x.astype(np.float16).astype(np.float32)


def _bf16_dtype() -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def _round_bf16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32).astype(_bf16_dtype()).astype(np.float32)


PRECISIONS = {
    "fp16": LowPrecision(
        "fp16",
        10,
        "tensor(float16)",
        65504.0,
        2.0**-11,
        1,
        _round_fp16,
        lambda: np.dtype(np.float16),
    ),
    "bf16": LowPrecision(
        "bf16", 16, "tensor(bfloat16)", 3.3895313892515355e38, 2.0**-8, 13, _round_bf16, _bf16_dtype
    ),
}


def get_precision(name: str) -> LowPrecision:
    """Return the low-precision type ``name`` or raise naming the choices."""
    if name not in PRECISIONS:
        raise ValueError(
            f"low_precision_type: unknown {name!r}, expected one of {sorted(PRECISIONS)}"
        )
    return PRECISIONS[name]
