"""Quantized activations: ``nn.LeakyReLU``, as in ModelOpt (its presets disable it)."""

from __future__ import annotations

from torch import nn

from modeloptim.torch.quantization.nn.modules.quant_module import (
    QuantInputBase,
    QuantModuleRegistry,
)

__all__ = ["QuantLeakyReLU"]


@QuantModuleRegistry.register({nn.LeakyReLU: "nn.LeakyReLU"})
class QuantLeakyReLU(QuantInputBase):
    """LeakyReLU with a quantized input."""
