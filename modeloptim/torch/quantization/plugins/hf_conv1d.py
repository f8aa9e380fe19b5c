"""Hugging Face ``Conv1D`` (GPT-2 family): a linear layer that stores its weight ``[in, out]``.

``Conv1D.forward`` computes ``x @ weight + bias``. The quantized wrapper hands the weight
quantizer the ``[out, in]`` view, so every config means the same as for ``nn.Linear``
(``axis=0`` is per output channel, ``block_sizes={-1: 128}`` blocks along the input dim), and
calibration, AWQ and GPTQ (which read weights through ``get_weight_2d``) see one layout.
Quantized weights are not cached (the transposed view is a new tensor on every read).
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from torch import nn

from modeloptim.torch.quantization.nn.modules.quant_module import (
    QuantizerLike,
    QuantLinearConvBase,
    QuantModuleRegistry,
)

__all__ = ["QuantHFConv1D", "register_hf_conv1d"]


def _transposed_quantized_weight(module: nn.Module, weight: Any) -> Any:
    if not module.__dict__.get("_quantize_weights", False):
        return weight
    quantizer: Any = module._modules["weight_quantizer"]
    return quantizer(weight.T).T


class QuantHFConv1D(QuantLinearConvBase):
    """HF ``Conv1D`` with fake-quantized input ``[..., in]`` and weight (stored ``[in, out]``)."""

    #: The stored weight is ``[in, out]``; quantizers see ``[out, in]``. Packing/export code
    #: that works on the stored layout checks this flag.
    weight_transposed: ClassVar[bool] = True

    def weight_quantizer_pairs(self) -> list[tuple[QuantizerLike, Any]]:
        """``(weight_quantizer, weight [out, in] view)``."""
        return [(q, w.T) for q, w in super().weight_quantizer_pairs()]

    def _register_weight_quantization(self) -> None:
        if self._parameters.get("weight") is not None:
            self._register_dynamic_attribute("weight", _transposed_quantized_weight)


def register_hf_conv1d() -> bool:
    """Register :class:`QuantHFConv1D` once transformers is imported; returns whether it did."""
    if "transformers" not in sys.modules:
        return False
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # an unusual transformers build
        return False
    if Conv1D not in QuantModuleRegistry:
        QuantModuleRegistry.register({Conv1D: "Conv1D"})(QuantHFConv1D)
    return True
