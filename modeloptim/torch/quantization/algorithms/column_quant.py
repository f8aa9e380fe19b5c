"""Column-wise rounding rules for GPTQ, one per weight-format family (a registry).

GPTQ rounds one input column of ``W [out, in]`` at a time. Each rule here reproduces what
the layer's weight quantizer computes for that column, given the scale of the column's
group (a block along the input dim, fixed once per group by GPTQ), so that after GPTQ the
weight quantizer reproduces the rounded weights. Supported: integer formats (per-tensor,
per-output-channel, blocks along the input dim, static or dynamic), FP8 (per-tensor,
per-output-channel) and NVFP4 (blocks of 16 along the input dim).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..formats.base import TINY_AMAX, QuantFormat, true_div
from ..formats.fp8 import FP8Format
from ..formats.granularity import Blocked, PerChannel, PerTensor
from ..formats.integer import IntegerFormat
from ..formats.minifloat import MINIFLOATS
from ..formats.nvfp4 import NVFP4Format

__all__ = [
    "COLUMN_QUANTIZERS",
    "FP8Columns",
    "IntColumns",
    "NVFP4Columns",
    "column_quantizer_for",
]

_Factory = Callable[[Any, "torch.Tensor | None", torch.Tensor], Any]


class _ColumnQuantizerRegistry:
    """Maps a :class:`QuantFormat` subclass to a factory ``(fmt, amax, weight) -> rule``."""

    def __init__(self) -> None:
        self._factories: dict[type, _Factory] = {}

    def register(self, fmt_cls: type) -> Callable[[_Factory], _Factory]:
        """Decorator registering the column rule factory of ``fmt_cls``."""

        def deco(fn: _Factory) -> _Factory:
            self._factories[fmt_cls] = fn
            return fn

        return deco

    def get(self, fmt: QuantFormat) -> _Factory | None:
        """The factory for ``fmt``'s class (or a registered base class), else ``None``."""
        for cls in type(fmt).__mro__:
            if cls in self._factories:
                return self._factories[cls]
        return None


COLUMN_QUANTIZERS = _ColumnQuantizerRegistry()


def _row_group_size(granularity: Any, weight: torch.Tensor) -> int | None:
    """Group size along the input dim for a 2-D weight; 0 = fixed scale; None = unsupported."""
    if isinstance(granularity, PerTensor):
        return 0
    if isinstance(granularity, PerChannel) and tuple(a % 2 for a in granularity.axis) == (0,):
        return 0
    if isinstance(granularity, Blocked) and set(granularity.block_sizes) in ({-1}, {1}):
        return next(iter(granularity.block_sizes.values()))
    return None


def _fixed_amax(amax: torch.Tensor | None, weight: torch.Tensor, name: str) -> torch.Tensor:
    if amax is None:
        raise ValueError(f"gptq: the {name} weight quantizer has no calibrated amax")
    a = amax.detach().float().to(weight.device)
    return a.reshape(-1) if a.numel() == weight.shape[0] else a.reshape(()).expand(weight.shape[0])


class IntColumns:
    """Integer rounding ``clamp(round(x * bound / amax), lo, hi) * amax / bound`` per row.

    Args:
        bound, lo, hi: the integer format's scale bound and clamp range.
        group_size: columns per scale group (0: fixed per-row ``amax``).
        amax: ``[rows]`` fixed amax when ``group_size == 0``.
    """

    def __init__(
        self, bound: float, lo: float, hi: float, group_size: int, amax: torch.Tensor | None
    ) -> None:
        self.bound, self.lo, self.hi = bound, lo, hi
        self.group_size = group_size
        self._amax = amax
        self.group_amax: dict[int, torch.Tensor] = {}

    def start_group(self, w_group: torch.Tensor, index: int) -> None:  # noqa: D102
        if self.group_size:
            if index not in self.group_amax:
                self.group_amax[index] = w_group.abs().amax(dim=1).float()
            self._amax = self.group_amax[index]

    def quantize(self, col: torch.Tensor) -> torch.Tensor:  # noqa: D102
        assert self._amax is not None
        tiny = self._amax <= TINY_AMAX
        scale = torch.where(tiny, torch.ones_like(self._amax), true_div(self.bound, self._amax))
        q = torch.round(col.float() * scale).clamp_(self.lo, self.hi).div_(scale)
        return q.masked_fill_(tiny, 0.0)


class FP8Columns:
    """FP8 rounding with a fixed per-row (or per-tensor) amax."""

    def __init__(self, fmt: FP8Format, amax: torch.Tensor) -> None:
        self.fmt = fmt
        self.group_size = 0
        self._amax = amax

    def start_group(self, w_group: torch.Tensor, index: int) -> None:  # noqa: D102
        return None

    def quantize(self, col: torch.Tensor) -> torch.Tensor:  # noqa: D102
        tiny = self._amax <= TINY_AMAX
        scale = torch.where(
            tiny, torch.ones_like(self._amax), true_div(self.fmt.max_value, self._amax)
        )
        m = self.fmt.max_value
        y = (col.float() * scale).clamp_(-m, m).to(self.fmt.dtype).float()
        return y.mul_(true_div(1.0, scale)).masked_fill_(tiny, 0.0)


class NVFP4Columns:
    """NVFP4 rounding: per row and group of 16 an E4M3 block scale times the global scale."""

    def __init__(self, global_amax: torch.Tensor, group_size: int = 16) -> None:
        self.group_size = group_size
        self.tiny = bool(global_amax <= TINY_AMAX)
        self.scale_2 = torch.ones(()) if self.tiny else true_div(global_amax.float(), 6.0 * 448.0)
        self._d: torch.Tensor | None = None
        self._group_d: dict[int, torch.Tensor] = {}

    def start_group(self, w_group: torch.Tensor, index: int) -> None:  # noqa: D102
        if index not in self._group_d:
            s = w_group.abs().amax(dim=1).float() / (6.0 * self.scale_2)
            s = torch.where(s == 0, torch.ones_like(s), s).clamp_(2.0**-9, 448.0)
            self._group_d[index] = s.to(torch.float8_e4m3fn).float() * self.scale_2
        self._d = self._group_d[index]

    def quantize(self, col: torch.Tensor) -> torch.Tensor:  # noqa: D102
        assert self._d is not None
        out = MINIFLOATS["e2m1"].round(col.float() / self._d) * self._d
        return out.zero_() if self.tiny else out


@COLUMN_QUANTIZERS.register(IntegerFormat)
def _int_columns(fmt: IntegerFormat, amax: torch.Tensor | None, weight: torch.Tensor) -> Any:
    gs = _row_group_size(fmt.granularity, weight)
    if gs is None:
        return None
    fixed = None if gs else _fixed_amax(amax, weight, fmt.describe())
    return IntColumns(fmt.bound, fmt.lo, fmt.hi, gs, fixed)


@COLUMN_QUANTIZERS.register(FP8Format)
def _fp8_columns(fmt: FP8Format, amax: torch.Tensor | None, weight: torch.Tensor) -> Any:
    if _row_group_size(fmt.granularity, weight) != 0:
        return None
    return FP8Columns(fmt, _fixed_amax(amax, weight, fmt.describe()))


@COLUMN_QUANTIZERS.register(NVFP4Format)
def _nvfp4_columns(fmt: NVFP4Format, amax: torch.Tensor | None, weight: torch.Tensor) -> Any:
    gs = _row_group_size(fmt.granularity, weight)
    if not gs:
        return None
    if fmt.dynamic_global or amax is None:
        amax = weight.detach().abs().amax()
    return NVFP4Columns(amax.detach().float().reshape(()), gs)


def column_quantizer_for(fmt: QuantFormat, amax: torch.Tensor | None, weight: torch.Tensor) -> Any:
    """The GPTQ column rule for a weight quantized with ``fmt`` (and calibrated ``amax``).

    Raises:
        NotImplementedError: the format or its layout has no column rule.
    """
    factory = COLUMN_QUANTIZERS.get(fmt)
    rule = factory(fmt, amax, weight) if factory is not None else None
    if rule is None:
        raise NotImplementedError(
            f"gptq: weight format {fmt.describe()!r} is not supported (supported: integer "
            "per-tensor/per-channel/blocks along the input dim, FP8 per-tensor/per-channel, "
            "NVFP4 blocks along the input dim)"
        )
    return rule
