"""Quantized batch and instance normalization (input/output quantizers, no weight quantizer).

ModelOpt's presets disable every quantizer of BatchNorm layers (``parent_class`` entries); the
wrappers exist so configs can still address them.
"""

from __future__ import annotations

from torch import nn

from modeloptim.torch.quantization.nn.modules.quant_module import (
    QuantInputBase,
    QuantModuleRegistry,
)

__all__ = ["QuantBatchNorm", "QuantInstanceNorm"]


@QuantModuleRegistry.register(
    {
        nn.BatchNorm1d: "nn.BatchNorm1d",
        nn.BatchNorm2d: "nn.BatchNorm2d",
        nn.BatchNorm3d: "nn.BatchNorm3d",
    }
)
class QuantBatchNorm(QuantInputBase):
    """BatchNorm with input ``[N, C, ...]`` quantizer."""


@QuantModuleRegistry.register(
    {
        nn.InstanceNorm1d: "nn.InstanceNorm1d",
        nn.InstanceNorm2d: "nn.InstanceNorm2d",
        nn.InstanceNorm3d: "nn.InstanceNorm3d",
    }
)
class QuantInstanceNorm(QuantInputBase):
    """InstanceNorm with input ``[N, C, ...]`` quantizer."""
