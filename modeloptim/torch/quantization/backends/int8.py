"""INT8 GEMM through ``torch._int_mm`` (int8 x int8 -> int32) with dynamic per-row activations.

Chosen over the dequantize backend only on CUDA and for ``M > 16`` (``_int_mm``'s minimum);
the float epilogue multiplies by the per-row activation and per-channel weight scales.
"""

from __future__ import annotations

import torch

from .registry import GEMM_BACKENDS
from .weights import QuantizedWeight, WeightFormat

_TINY = 2.0**-24


def quantize_activation_int8(x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row INT8 (narrow range) codes of ``x2d`` and the float32 dequant scale ``[M, 1]``."""
    xf = x2d.float()
    amax = xf.abs().amax(dim=1, keepdim=True).clamp(min=_TINY)
    scale = torch.div(torch.full_like(amax, 127.0), amax)
    q = torch.clamp(torch.round(xf * scale), -127, 127).to(torch.int8)
    return q, torch.reciprocal(scale)


def _int8_available(x: torch.Tensor, w: QuantizedWeight) -> bool:
    n, k = w.shape
    rows = x.numel() // max(1, x.shape[-1])
    return x.is_cuda and hasattr(torch, "_int_mm") and rows > 16 and k % 8 == 0 and n % 8 == 0


@GEMM_BACKENDS.register("int8_int_mm", (WeightFormat.INT8,), priority=10, available=_int8_available)
def int8_linear(
    x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x [M, K] @ W.T`` with W8A8 integer tensor cores; ``[M, N]`` in ``x.dtype``."""
    q, sa = quantize_activation_int8(x)
    acc = torch._int_mm(q, weight.data.t())
    y = (acc.float() * sa * weight.scale.float()[None, :]).to(x.dtype)
    return y if bias is None else y + bias.to(y.dtype)
