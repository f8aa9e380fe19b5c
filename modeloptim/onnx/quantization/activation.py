"""Activation quantization types: how a calibrated range becomes a QuantizeLinear scale/zero point.

* ``int8``: symmetric, zero point 0, ``scale = amax / 127``. What TensorRT expects.
* ``uint8``: asymmetric over ``[min(lo, 0), max(hi, 0)]``, ``scale = (hi - lo) / 255``,
  ``zero_point = round(-lo / scale)``. onnxruntime's x86 CPU kernels compute uint8 activations
  times int8 weights (``U8S8``; AVX512-VNNI ``vpdpbusd`` and AVX2 ``vpmaddubsw`` multiply
  unsigned by signed bytes), so this is its native layout: int8 activations are converted to
  uint8 by onnxruntime itself. The range is not wasted on the negative half after ReLU-like
  activations, and onnxruntime removes a ``Relu``/``Clip`` in front of a QuantizeLinear whose
  range already lies inside the activation's range, which fuses ``Conv -> Relu`` into one
  ``QLinearConv``.
* ``fp8``: E4M3, symmetric, ``scale = amax / 448``.

Types register in :data:`ACTIVATION_TYPES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from modeloptim.onnx.quantization.formats import FP8, INT8, TINY_AMAX, QuantFormat

QParams = tuple[np.ndarray, np.ndarray]  # (scale float32 scalar, zero point scalar of the type)


@dataclass(frozen=True)
class ActivationType:
    """One activation quantization scheme.

    Attributes:
        name: registry key.
        onnx_type: element type of the QuantizeLinear output / zero point.
        params: ``(lo, hi) -> (scale, zero_point)`` as 0-d arrays.
        fake_quantize: ``(x, scale, zero_point) -> dequantize(quantize(x))`` in float32, the
            numpy twin of onnxruntime's QuantizeLinear + DequantizeLinear.
    """

    name: str
    onnx_type: int
    params: Callable[[float, float], QParams]
    fake_quantize: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class ActivationRegistry:
    """Name -> :class:`ActivationType`; the extension point for activation schemes."""

    def __init__(self) -> None:
        self._types: dict[str, ActivationType] = {}

    def add(self, act: ActivationType) -> ActivationType:
        """Register ``act`` under its name."""
        self._types[act.name] = act
        return act

    def names(self) -> list[str]:
        """Registered names."""
        return sorted(self._types)

    def get(self, name: str) -> ActivationType:
        """Return the type ``name`` or raise naming the choices."""
        if name not in self._types:
            raise ValueError(f"activation_type: unknown {name!r}, expected one of {self.names()}")
        return self._types[name]


ACTIVATION_TYPES = ActivationRegistry()


def _symmetric(fmt: QuantFormat) -> Callable[[float, float], QParams]:
    def params(lo: float, hi: float) -> QParams:
        scale = fmt.scale_from_amax(max(abs(lo), abs(hi))).reshape(())
        return scale, fmt.cast(np.zeros((), np.float32))

    return params


def _int8_fq(x: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    # QuantizeLinear saturates activations at the full int8 range [-128, 127].
    return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)


def _fp8_fq(x: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    return FP8.fake_quantize(x, scale)


def _uint8_params(lo: float, hi: float) -> QParams:
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)  # zero must be exactly representable
    if hi - lo <= TINY_AMAX:
        return np.array(1.0, np.float32), np.array(0, np.uint8)
    scale = np.float32((hi - lo) / 255.0)
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    return np.array(scale, np.float32), np.array(zp, np.uint8)


def _uint8_fq(x: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    z = np.float32(zp)
    q = np.clip(np.rint(x / scale) + z, 0, 255)
    return ((q - z) * scale).astype(np.float32)


INT8_ACT = ACTIVATION_TYPES.add(ActivationType("int8", 3, _symmetric(INT8), _int8_fq))
UINT8_ACT = ACTIVATION_TYPES.add(ActivationType("uint8", 2, _uint8_params, _uint8_fq))
FP8_ACT = ACTIVATION_TYPES.add(ActivationType("fp8", 17, _symmetric(FP8), _fp8_fq))
