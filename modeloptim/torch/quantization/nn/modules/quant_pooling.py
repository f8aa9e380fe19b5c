"""Quantized pooling layers (input/output quantizers)."""

from __future__ import annotations

from torch import nn

from modeloptim.torch.quantization.nn.modules.quant_module import (
    QuantInputBase,
    QuantModuleRegistry,
)

__all__ = ["QuantPool"]

_POOLS: dict[type[nn.Module], str] = {
    cls: f"nn.{cls.__name__}"
    for cls in (
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.MaxPool3d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AvgPool3d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveAvgPool3d,
    )
}


@QuantModuleRegistry.register(_POOLS)
class QuantPool(QuantInputBase):
    """Pooling with a quantized input ``[N, C, ...]``."""
