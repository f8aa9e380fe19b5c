"""Quantized number formats for ONNX QuantizeLinear/DequantizeLinear.

Each format knows its ONNX element type, its largest magnitude, the opset its
QuantizeLinear/DequantizeLinear needs, and how to quantize a float array in numpy exactly as
onnxruntime's ``QuantizeLinear`` does (so a numpy reference can check the graph).
Formats register in :data:`FORMATS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Values with amax at or below this quantize to zero (DESIGN.md section 2); scale becomes 1.
TINY_AMAX = 2.0**-24


@dataclass(frozen=True)
class QuantFormat:
    """A quantized element format.

    Attributes:
        name: registry key (``"int8"``, ``"fp8"``, ``"int4"``).
        onnx_type: ``onnx.TensorProto`` element type of quantized values / zero points.
        max_value: largest representable magnitude used for ``scale = amax / max_value``.
        min_opset: opset where QuantizeLinear/DequantizeLinear accept this type.
        cast: numpy function ``float32 array -> quantized array`` (rounding + saturation).
    """

    name: str
    onnx_type: int
    max_value: float
    min_opset: int
    cast: Callable[[np.ndarray], np.ndarray]

    def scale_from_amax(self, amax: np.ndarray | float) -> np.ndarray:
        """``scale = amax / max_value`` with tiny amax mapped to scale 1 (shape of amax)."""
        amax = np.asarray(amax, dtype=np.float32)
        return np.where(amax > TINY_AMAX, amax / np.float32(self.max_value), 1.0).astype(np.float32)

    def quantize(self, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Quantize ``x`` with a broadcastable ``scale`` (``x / scale``, round, saturate)."""
        return self.cast(x.astype(np.float32) / scale.astype(np.float32))

    def fake_quantize(self, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """``dequantize(quantize(x))`` in float32, the reference for graph outputs."""
        return self.quantize(x, scale).astype(np.float32) * scale.astype(np.float32)


class FormatRegistry:
    """Name -> :class:`QuantFormat`."""

    def __init__(self) -> None:
        self._formats: dict[str, QuantFormat] = {}

    def add(self, fmt: QuantFormat) -> QuantFormat:
        """Register ``fmt`` under its name."""
        self._formats[fmt.name] = fmt
        return fmt

    def get(self, name: str, arg: str = "quantize_mode") -> QuantFormat:
        """Return the format ``name`` or raise naming the allowed values."""
        if name not in self._formats:
            raise ValueError(f"{arg}: unknown {name!r}, expected one of {sorted(self._formats)}")
        return self._formats[name]


FORMATS = FormatRegistry()


def _int_cast(bound: int, low: int, dtype: type) -> Callable[[np.ndarray], np.ndarray]:
    def cast(x: np.ndarray) -> np.ndarray:
        # np.rint rounds half to even, like ONNX QuantizeLinear.
        return np.clip(np.rint(x), low, bound).astype(dtype)

    return cast


def _fp8_cast(x: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return np.clip(x, -448.0, 448.0).astype(ml_dtypes.float8_e4m3fn)


def _int4_cast(x: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return np.clip(np.rint(x), -7, 7).astype(np.int8).astype(ml_dtypes.int4)


# Activations use the full ONNX int8 range [-128, 127] (QuantizeLinear saturates there);
# weights are quantized by us with the narrow range [-127, 127] (symmetric, DESIGN.md).
INT8 = FORMATS.add(QuantFormat("int8", 3, 127.0, 13, _int_cast(127, -127, np.int8)))
FP8 = FORMATS.add(QuantFormat("fp8", 17, 448.0, 19, _fp8_cast))
INT4 = FORMATS.add(QuantFormat("int4", 22, 7.0, 21, _int4_cast))
