"""Number formats: one class per family, composed with a scale granularity.

- :class:`IntegerFormat` (INT2..INT8; with :class:`Blocked` also block INT4, AWQ style)
- :class:`FP8Format` (E4M3, E5M2)
- :class:`NVFP4Format` (E2M1 + E4M3 block scales + float32 global scale)
- :class:`MXFormat` (MXFP8, MXFP6, MXFP4, MXINT8 with E8M0 block scales)

:func:`resolve_format` maps ModelOpt attributes or a named format to one of them.
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
