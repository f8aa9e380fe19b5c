"""OCP Microscaling (MX) formats: MXFP8, MXFP6, MXFP4, MXINT8.

Each block of 32 elements (along the last dim by default) shares a power-of-two scale
stored as E8M0 (a biased exponent byte). Numerics, float32:

    e   = ceil(log2(block_amax / elem_max)), clamped to [-127, 127]; block_amax == 0 -> -127
    q   = cast_to_elem(x / 2**e)
    out = q * 2**e

``ceil(log2(r))`` is computed exactly from the float32 quotient ``r`` with ``frexp``
(``r = m * 2**k``, ``m`` in [0.5, 1): the result is ``k - 1`` when ``m == 0.5``, else ``k``),
so no transcendental rounding can move a block to the wrong binade. Element casts: E4M3 and
E5M2 clamp to their max and use torch's float8 cast (round to nearest even); E3M2, E2M3 and
E2M1 round half-to-even on their grid and saturate (:mod:`.minifloat`).

MXINT8 choice: elements are int8 two's complement codes with an implicit ``2**-6`` scale
(OCP MX v1.0), restricted to the symmetric range [-127, 127] so ``elem_max = 127/64``;
``q = clamp(round_half_even(y * 64), -127, 127) / 64``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .base import QuantFormat, true_div
from .granularity import Blocked, Granularity
from .minifloat import MINIFLOATS

__all__ = ["MX_ELEMENTS", "MXFormat"]

#: element name -> (format name, bits per element, element max)
MX_ELEMENTS: dict[str, tuple[str, int, float]] = {
    "e4m3": ("mxfp8", 8, 448.0),
    "e5m2": ("mxfp8_e5m2", 8, 57344.0),
    "e3m2": ("mxfp6", 6, 28.0),
    "e2m3": ("mxfp6_e2m3", 6, 7.5),
    "e2m1": ("mxfp4", 4, 6.0),
    "int8": ("mxint8", 8, 127.0 / 64.0),
}
_FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


class MXFormat(QuantFormat):
    """An MX format (power-of-two E8M0 block scales).

    Args:
        elem: element type, one of ``e4m3, e5m2, e3m2, e2m3, e2m1, int8``.
        block_sizes: blocks sharing one scale (default ``{-1: 32}``).
    """

    def __init__(
        self, elem: str = "e4m3", block_sizes: Mapping[int, int | None] | None = None
    ) -> None:
        if elem not in MX_ELEMENTS:
            raise ValueError(f"elem: expected one of {sorted(MX_ELEMENTS)}, got {elem!r}")
        self.elem = elem
        self.name, self.bits, self.max_value = MX_ELEMENTS[elem]
        self.granularity = Blocked(dict(block_sizes or {-1: 32}), dynamic=True)

    @property
    def scale_bits(self) -> float:  # noqa: D102
        g = self.granularity
        assert isinstance(g, Blocked)
        return 8.0 / g.block_numel if g.block_numel else 0.0

    @property
    def amax_granularity(self) -> Granularity | None:  # noqa: D102
        return None

    def describe(self) -> str:  # noqa: D102
        return f"{self.name} {self.granularity.describe().replace(' dynamic', '')}"

    def _view_amax(self, view: torch.Tensor, amax: torch.Tensor | None) -> torch.Tensor | None:
        return None  # scales come from each block

    def exponent(self, v: torch.Tensor) -> torch.Tensor:
        """Shared E8M0 exponent (int32, ``[N, 1]``) of each row of the float32 view ``v``."""
        block_amax = v.abs().amax(dim=-1, keepdim=True)
        r = true_div(block_amax, self.max_value)
        m, k = torch.frexp(r)
        e = torch.where(m == 0.5, k - 1, k)
        e = torch.where(block_amax == 0, torch.full_like(e, -127), e)
        # frexp of inf/NaN gives an unspecified exponent (0 on CPU): a block holding +-inf
        # gets the largest scale, 2**127, as in the Triton kernels (its finite elements
        # flush to zero); NaN blocks are set to NaN by the callers.
        e = torch.where(torch.isinf(r), torch.full_like(e, 127), e)
        return e.clamp_(-127, 127)

    def _elem_codes(self, y: torch.Tensor) -> torch.Tensor:
        if self.elem in _FP8_DTYPES:
            return y.clamp(-self.max_value, self.max_value).to(_FP8_DTYPES[self.elem])
        if self.elem == "int8":
            return torch.round(y * 64.0).clamp_(-127, 127).to(torch.int8)
        return MINIFLOATS[self.elem].encode(y)

    def _elem_values(self, codes: torch.Tensor) -> torch.Tensor:
        if self.elem == "int8":
            return codes.float() / 64.0
        if self.elem in _FP8_DTYPES:
            return codes.float()
        return MINIFLOATS[self.elem].decode(codes)

    def _fake_quant_view(self, v: torch.Tensor, amax_v: torch.Tensor | None) -> torch.Tensor:
        nan_block = v.isnan().any(dim=-1, keepdim=True)
        p = torch.exp2(self.exponent(v).float())
        y = v / p
        if self.elem in _FP8_DTYPES:
            q = y.clamp_(-self.max_value, self.max_value).to(_FP8_DTYPES[self.elem]).float()
        elif self.elem == "int8":
            q = torch.round(y.mul_(64.0)).clamp_(-127, 127).div_(64.0)
        else:
            q = MINIFLOATS[self.elem].round(y)
        # A block holding NaN comes out all NaN (its scale is undefined), as in the kernels.
        return q.mul_(p).masked_fill_(nan_block, float("nan"))

    def _quantize_view(
        self, v: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        e = self.exponent(v)
        p = torch.exp2(e.float())
        # E8M0 byte 0xFF is NaN (OCP MX): the code of a block holding NaN.
        byte = torch.where(v.isnan().any(dim=-1, keepdim=True), 255, e + 127)
        return self._elem_codes(v / p), {"exponent": byte.to(torch.uint8)}

    def _dequantize_view(
        self, codes: torch.Tensor, scales: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        byte = scales["exponent"]
        p = torch.exp2(byte.to(torch.int32).float() - 127.0)
        return (self._elem_values(codes) * p).masked_fill_(byte == 255, float("nan"))

    def _kernel_call(
        self, view: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[str, tuple[Any, ...]] | None:
        g = self.granularity
        assert isinstance(g, Blocked)
        if g.block_sizes != {-1: 32}:
            return None
        return "mx", (view, self.elem)
