"""Always-available backend: dequantize the weight to the activation dtype, then matmul."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import GEMM_BACKENDS
from .weights import QuantizedWeight, WeightFormat


@GEMM_BACKENDS.register("dequantize", tuple(WeightFormat), priority=0)
def dequantize_linear(
    x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None
) -> torch.Tensor:
    """``F.linear(x, weight.dequantize(x.dtype), bias)``; works for every format and device."""
    return F.linear(x, weight.dequantize(x.dtype), bias)
