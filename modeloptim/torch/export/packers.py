"""Turn a weight and its (fake) weight quantizer into a packed :class:`QTensor`.

:data:`WEIGHT_PACKERS` maps a format class (``IntegerFormat``, ``FP8Format``, ...) to a
function ``(format, weight, amax) -> QTensor``. Adding a packed format means registering one
function; unsupported combinations raise a ``ValueError`` that names the format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from modeloptim.torch.quantization.formats import (
    Blocked,
    FP8Format,
    IntegerFormat,
    MXFormat,
    NVFP4Format,
    QuantFormat,
)
from modeloptim.torch.quantization.nn import SequentialQuantizer, TensorQuantizer
from modeloptim.torch.quantization.qtensor import (
    FP8QTensor,
    INT4BlockQTensor,
    INT8QTensor,
    MXFP4QTensor,
    MXFP8QTensor,
    NVFP4QTensor,
    QTensor,
)

__all__ = [
    "WEIGHT_PACKERS",
    "PackerRegistry",
    "UnsupportedFormatError",
    "leaf_quantizers",
    "pack_weight",
    "quantizes",
]

Packer = Callable[[Any, torch.Tensor, "torch.Tensor | None"], QTensor]


class UnsupportedFormatError(ValueError):
    """A layer/format combination that has no packed (real quantized) representation."""


class PackerRegistry:
    """Format class -> packing function (exact-type lookup along the MRO)."""

    def __init__(self) -> None:
        self._packers: dict[type, Packer] = {}

    def register(self, fmt_cls: type[QuantFormat]) -> Callable[[Packer], Packer]:
        """Decorator registering ``fn(format, weight, amax) -> QTensor`` for ``fmt_cls``."""

        def deco(fn: Packer) -> Packer:
            self._packers[fmt_cls] = fn
            return fn

        return deco

    def get(self, fmt: QuantFormat) -> Packer:
        """The packer for ``fmt``; :class:`UnsupportedFormatError` if there is none."""
        for cls in type(fmt).__mro__:
            if cls in self._packers:
                return self._packers[cls]
        raise UnsupportedFormatError(
            f"format: no packed representation for {fmt.describe()} "
            f"(supported: {sorted(c.__name__ for c in self._packers)})"
        )


WEIGHT_PACKERS = PackerRegistry()


def _last_dim_block(fmt: QuantFormat) -> int | None:
    g = fmt.granularity
    if isinstance(g, Blocked) and list(g.block_sizes) == [-1]:
        return g.block_sizes[-1]  # None: one block per row (per-token), not packable
    return None


def _unsupported(fmt: QuantFormat, why: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(f"format: {fmt.describe()} cannot be packed: {why}")


@WEIGHT_PACKERS.register(IntegerFormat)
def _pack_int(fmt: Any, w: torch.Tensor, amax: torch.Tensor | None) -> QTensor:
    if fmt.unsigned:
        raise _unsupported(fmt, "unsigned integer weights are not supported by serving engines")
    block = _last_dim_block(fmt)
    if fmt.bits == 8 and not isinstance(fmt.granularity, Blocked):
        if amax is None:
            raise _unsupported(fmt, "static INT8 weights need a calibrated amax")
        return INT8QTensor.quantize(w, amax, narrow_range=fmt.narrow_range)
    if fmt.bits == 4 and block is not None:
        return INT4BlockQTensor.quantize(
            w, None if fmt.granularity.dynamic else amax, block, fmt.narrow_range
        )
    raise _unsupported(fmt, "only INT8 per-tensor/per-channel and INT4 last-dim blocks pack")


@WEIGHT_PACKERS.register(FP8Format)
def _pack_fp8(fmt: Any, w: torch.Tensor, amax: torch.Tensor | None) -> QTensor:
    if fmt.exponent_bits != 4:
        raise _unsupported(fmt, "only E4M3 weights are exported")
    g = fmt.granularity
    if isinstance(g, Blocked):
        dims = g.block_sizes
        rows, cols = dims.get(-2), dims.get(-1)
        block: int | tuple[int, int]
        if list(dims) == [-1] and cols is not None:
            block = cols
        elif set(dims) == {-2, -1} and w.ndim == 2 and rows is not None and cols is not None:
            block = (rows, cols)
        else:
            raise _unsupported(fmt, "blocks must be along the last dim or 2-D tiles")
        return FP8QTensor.quantize(w, None if g.dynamic else amax, block_size=block)
    if amax is None:
        raise _unsupported(fmt, "static FP8 weights need a calibrated amax")
    return FP8QTensor.quantize(w, amax)


@WEIGHT_PACKERS.register(NVFP4Format)
def _pack_nvfp4(fmt: Any, w: torch.Tensor, amax: torch.Tensor | None) -> QTensor:
    block = _last_dim_block(fmt)
    if block is None:
        raise _unsupported(fmt, "NVFP4 blocks must be along the last dim")
    return NVFP4QTensor.quantize(w, None if fmt.dynamic_global else amax, block)


@WEIGHT_PACKERS.register(MXFormat)
def _pack_mx(fmt: Any, w: torch.Tensor, amax: torch.Tensor | None) -> QTensor:
    block = _last_dim_block(fmt)
    if block is None:
        raise _unsupported(fmt, "MX blocks must be along the last dim")
    if fmt.elem == "e4m3":
        return MXFP8QTensor.quantize(w, block)
    if fmt.elem == "e2m1":
        return MXFP4QTensor.quantize(w, block)
    raise _unsupported(fmt, "only MXFP8 (E4M3) and MXFP4 (E2M1) elements are packed")


def quantizes(q: Any) -> bool:
    """True when ``q`` is enabled and actually quantizes (not a scale-only AWQ pre-scaler)."""
    return isinstance(q, TensorQuantizer) and q.is_enabled and bool(getattr(q, "_if_quant", True))


def leaf_quantizers(q: Any) -> list[TensorQuantizer]:
    """The TensorQuantizers of ``q`` (one, or the members of a SequentialQuantizer)."""
    if isinstance(q, SequentialQuantizer):
        return q.quantizers()
    if isinstance(q, TensorQuantizer):
        return [q]
    return []


def pack_weight(quantizer: Any, weight: torch.Tensor) -> tuple[QTensor, list[TensorQuantizer]]:
    """Pack ``weight`` with the first enabled stage of ``quantizer``.

    Returns:
        ``(qtensor, rest)``: the packed first stage and the later enabled stages (e.g. the FP8
        per-tensor step of W4A8 weights), which still apply on the dequantized weight.

    Raises:
        UnsupportedFormatError: the quantizer is disabled, uses a pre_quant_scale (a weight
            pre-scale has no packed form) or its format cannot be packed.
    """
    stages = [q for q in leaf_quantizers(quantizer) if q.is_enabled]
    if not stages:
        raise UnsupportedFormatError("weight_quantizer: disabled; nothing to pack")
    first = stages[0]
    if first.pre_quant_scale is not None:
        raise UnsupportedFormatError("weight_quantizer: a weight pre_quant_scale cannot be packed")
    fmt = first.format
    amax = first.amax
    if amax is None and not fmt.is_dynamic:
        raise UnsupportedFormatError(
            f"weight_quantizer: {fmt.describe()} is static but has no amax; calibrate first"
        )
    packed = WEIGHT_PACKERS.get(fmt)(fmt, weight.detach(), amax)
    return packed, stages[1:]
