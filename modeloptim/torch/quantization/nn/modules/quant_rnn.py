"""Quantized ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

One ``weight_quantizer`` is shared by all ``weight_ih_l*``/``weight_hh_l*`` matrices (their row
count, ``gates * hidden``, is the same, so per-row ``axis=0`` amax has one shape); biases stay in
float. The input (a tensor ``[T, N, in]``/``[N, T, in]`` or a ``PackedSequence``) goes through
``input_quantizer``; the output sequence through ``output_quantizer`` (disabled by default).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from modeloptim.torch.quantization.nn.modules.quant_module import (
    DEFAULT_WEIGHT_CFG,
    QuantInputBase,
    QuantizerLike,
    QuantModuleRegistry,
)
from modeloptim.torch.quantization.nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["QuantRNNBase"]


def _apply(quantizer: nn.Module, x: Any) -> Any:
    if isinstance(x, PackedSequence):
        return x._replace(data=quantizer(x.data))
    return quantizer(x)


@QuantModuleRegistry.register({nn.RNN: "nn.RNN", nn.LSTM: "nn.LSTM", nn.GRU: "nn.GRU"})
class QuantRNNBase(QuantInputBase):
    """Recurrent layer whose weight matrices are fake-quantized during ``forward``."""

    def _setup(self, **kwargs: Any) -> None:
        super()._setup(**kwargs)
        self.weight_quantizer = TensorQuantizer(DEFAULT_WEIGHT_CFG)
        names = [n for n in self._flat_weights_names if n.startswith("weight_")]
        self.__dict__["weight_names"] = tuple(names)
        self._register_weight_quantization()

    def forward(self, input: Any, hx: Any = None) -> Any:
        """Run the recurrent layer on quantized input with quantized weights."""
        x = _apply(self.input_quantizer, input)
        try:
            with self.quantize_weight():
                # RNNBase.forward reads the cached list, so refresh it with quantized weights.
                self._init_flat_weights()
                # Skip QuantInputBase.forward (input already quantized): original RNN forward.
                out, h = super(QuantInputBase, self).forward(x, hx)
        finally:
            self._init_flat_weights()
        return _apply(self.output_quantizer, out), h

    def weight_quantizer_pairs(self) -> list[tuple[QuantizerLike, torch.Tensor]]:
        """``(weight_quantizer, weight)`` for every ``weight_ih``/``weight_hh`` matrix."""
        pairs: list[tuple[QuantizerLike, torch.Tensor]] = []
        for n in self.weight_names:
            weight = self._parameters[n]
            if weight is not None:
                pairs.append((self.weight_quantizer, weight))
        return pairs
