"""Quantized ``nn.Linear`` (input, weight and output quantizers)."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from modeloptim.torch.quantization.nn.modules.quant_module import (
    QuantLinearConvBase,
    QuantModuleRegistry,
)

__all__ = ["QuantLinear"]


@QuantModuleRegistry.register(
    {
        nn.Linear: "nn.Linear",
        # The out_proj of nn.MultiheadAttention; its weight is read directly by the attention.
        NonDynamicallyQuantizableLinear: "nn.NonDynamicallyQuantizableLinear",
    }
)
class QuantLinear(QuantLinearConvBase):
    """``nn.Linear`` with fake-quantized input ``[..., in]`` and weight ``[out, in]``."""
