"""Real quantized tensors: packed codes plus scales, one class per format (DESIGN §2).

``dequantize(quantize(x))`` equals the fake-quantized ``x`` exactly. 4-bit formats store two
codes per byte (even index in the low nibble).

===================  ==================================================  =============
class                storage                                             bits/element
===================  ==================================================  =============
INT8QTensor          int8 codes, float32 per-tensor / per-channel scale  8
INT4BlockQTensor     uint8 (2 codes), float32 scale per block            4 + 32/block
FP8QTensor           float8_e4m3fn, float32 scale (tensor/channel/block) 8 (+ blocks)
NVFP4QTensor         uint8 (2 E2M1), E4M3 scale per 16, float32 global   4.5
MXFP8QTensor         float8_e4m3fn, E8M0 scale per 32                    8.25
MXFP4QTensor         uint8 (2 E2M1), E8M0 scale per 32                   4.25
===================  ==================================================  =============
"""

from .base import QTENSOR_TYPES, QTensor, QTensorRegistry
from .fp8 import FP8QTensor
from .integer import INT4BlockQTensor, INT8QTensor
from .mx import MXFP4QTensor, MXFP8QTensor
from .nvfp4 import NVFP4QTensor
from .packing import pack_nibbles, unpack_nibbles

__all__ = [
    "QTENSOR_TYPES",
    "FP8QTensor",
    "INT4BlockQTensor",
    "INT8QTensor",
    "MXFP4QTensor",
    "MXFP8QTensor",
    "NVFP4QTensor",
    "QTensor",
    "QTensorRegistry",
    "pack_nibbles",
    "unpack_nibbles",
]
