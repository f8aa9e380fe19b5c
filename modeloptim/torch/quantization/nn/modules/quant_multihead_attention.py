"""Quantized ``nn.MultiheadAttention``.

``input_quantizer`` is applied to query, key and value; ``weight_quantizer`` to the packed
``in_proj_weight`` ``[3E, E]`` (layers built with separate ``kdim``/``vdim`` keep float q/k/v
projection weights); ``out_proj`` is converted on its own (a ``QuantLinear``) and its weight is
fake-quantized here because the attention reads it directly instead of calling it.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, ClassVar

from torch import nn

from modeloptim.torch.quantization.nn.modules.quant_module import (
    DEFAULT_WEIGHT_CFG,
    QuantInputBase,
    QuantModule,
    QuantModuleRegistry,
)
from modeloptim.torch.quantization.nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["QuantMultiheadAttention"]


@QuantModuleRegistry.register({nn.MultiheadAttention: "nn.MultiheadAttention"})
class QuantMultiheadAttention(QuantInputBase):
    """MultiheadAttention with quantized q/k/v inputs and projection weights."""

    weight_names: ClassVar[tuple[str, ...]] = ("in_proj_weight",)

    def _setup(self, **kwargs: Any) -> None:
        super()._setup(**kwargs)
        self.weight_quantizer = TensorQuantizer(DEFAULT_WEIGHT_CFG)
        self._register_weight_quantization()

    def forward(  # type: ignore[override]
        self, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """Attention on quantized inputs; returns ``(output, weights)`` like the original."""
        q = self.input_quantizer(query)
        k = q if key is query else self.input_quantizer(key)
        v = k if value is key else self.input_quantizer(value)
        with ExitStack() as stack:
            stack.enter_context(self.quantize_weight())
            if isinstance(self.out_proj, QuantModule):
                stack.enter_context(self.out_proj.quantize_weight())
            out, weights = super(QuantInputBase, self).forward(q, k, v, *args, **kwargs)
        return self.output_quantizer(out), weights
