"""Number formats: one class per family, composed with a scale granularity.

- :class:`IntegerFormat` (INT2..INT8; with :class:`Blocked` also block INT4, AWQ style)
- :class:`FP8Format` (E4M3, E5M2; per tensor, per channel, 1-D/2-D or per-token blocks)
- :class:`NVFP4Format` (E2M1 + E4M3 block scales + float32 global scale; dynamic or
  calibrated block scales)
- :class:`MXFormat` (MXFP8, MXFP6, MXFP4, MXINT8 with E8M0 block scales)

Granularities (:class:`PerTensor`, :class:`PerChannel`, :class:`Blocked`) say which
elements share an amax; ``dynamic=True`` recomputes it from every input.
:func:`resolve_format` maps ModelOpt attributes or a named format to one of them. Every
format computes in float32, returns the input dtype, and on CUDA calls the kernels in
:mod:`..kernel_registry` when one is registered (bit-exact with the torch path).

Example::

    fmt = resolve_format({"num_bits": (2, 1),
                          "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}})
    y = fmt.fake_quant(x, amax=x.abs().amax())      # NVFP4, same shape/dtype as x
    q = fmt.quantize(x, amax=x.abs().amax())        # uint8 E2M1 codes + E4M3 scales
    assert torch.equal(q.dequantize(), y)
"""

from .base import TINY_AMAX, QuantFormat, QuantizedCodes, check_input
from .fp8 import FP8Format
from .granularity import Blocked, Granularity, PerChannel, PerTensor
from .integer import IntegerFormat
from .minifloat import MINIFLOATS, MiniFloat
from .mx import MX_ELEMENTS, MXFormat
from .nvfp4 import NVFP4Format
from .resolve import (
    FORMAT_RULES,
    NAMED_FORMATS,
    FormatRegistry,
    FormatSpec,
    parse_num_bits,
    resolve_format,
)

__all__ = [
    "FORMAT_RULES",
    "MINIFLOATS",
    "MX_ELEMENTS",
    "NAMED_FORMATS",
    "TINY_AMAX",
    "Blocked",
    "FP8Format",
    "FormatRegistry",
    "FormatSpec",
    "Granularity",
    "IntegerFormat",
    "MXFormat",
    "MiniFloat",
    "NVFP4Format",
    "PerChannel",
    "PerTensor",
    "QuantFormat",
    "QuantizedCodes",
    "check_input",
    "parse_num_bits",
    "resolve_format",
]
