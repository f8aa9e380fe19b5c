"""Quantized convolutions and transposed convolutions (1d/2d/3d)."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from modeloptim.torch.quantization.config import QuantizerAttributeConfig
from modeloptim.torch.quantization.nn.modules.quant_module import (
    QuantLinearConvBase,
    QuantModuleRegistry,
)

__all__ = ["QuantConv", "QuantConvTranspose"]


@QuantModuleRegistry.register(
    {nn.Conv1d: "nn.Conv1d", nn.Conv2d: "nn.Conv2d", nn.Conv3d: "nn.Conv3d"}
)
class QuantConv(QuantLinearConvBase):
    """Conv with fake-quantized input ``[N, C_in, ...]`` and weight ``[C_out, C_in/g, *k]``."""


@QuantModuleRegistry.register(
    {
        nn.ConvTranspose1d: "nn.ConvTranspose1d",
        nn.ConvTranspose2d: "nn.ConvTranspose2d",
        nn.ConvTranspose3d: "nn.ConvTranspose3d",
    }
)
class QuantConvTranspose(QuantLinearConvBase):
    """Transposed conv; weight ``[C_in, C_out/g, *k]`` so per-channel default is axis 1."""

    default_weight_cfg: ClassVar[QuantizerAttributeConfig] = QuantizerAttributeConfig(
        num_bits=8, axis=1
    )
