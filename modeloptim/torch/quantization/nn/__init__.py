"""Quantization ``nn`` modules (``TensorQuantizer``, ``SequentialQuantizer``, ...)."""

from .modules import SequentialQuantizer, TensorQuantizer

__all__ = ["SequentialQuantizer", "TensorQuantizer"]

# --- quantized layer wrappers and their registry (qapi) ---
from .modules.quant_activations import QuantLeakyReLU
from .modules.quant_batchnorm import QuantBatchNorm, QuantInstanceNorm
from .modules.quant_conv import QuantConv, QuantConvTranspose
from .modules.quant_linear import QuantLinear
from .modules.quant_module import (
    QuantInputBase,
    QuantLinearConvBase,
    QuantModule,
    QuantModuleRegistry,
    cache_quantized_weights,
)
from .modules.quant_multihead_attention import QuantMultiheadAttention
from .modules.quant_pooling import QuantPool
from .modules.quant_rnn import QuantRNNBase

__all__ += [
    "QuantBatchNorm",
    "QuantConv",
    "QuantConvTranspose",
    "QuantInputBase",
    "QuantInstanceNorm",
    "QuantLeakyReLU",
    "QuantLinear",
    "QuantLinearConvBase",
    "QuantModule",
    "QuantModuleRegistry",
    "QuantMultiheadAttention",
    "QuantPool",
    "QuantRNNBase",
    "cache_quantized_weights",
]
