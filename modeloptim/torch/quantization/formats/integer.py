"""Integer formats (INT2..INT8, signed or unsigned), any granularity (incl. block INT4).

Numerics (DESIGN §2), all float32, same operation order as the GPU kernels:

    bound = 2**(n-1) - 1 (signed) | 2**n - 1 (unsigned)
    scale = bound / amax
    q     = clamp(round_half_even(x * scale), lo, hi)
    out   = q / scale

``lo, hi`` is ``[-bound, bound]`` (narrow range, the default), ``[-bound-1, bound]`` with
``narrow_range=False``, and ``[0, 2**n - 1]`` for unsigned (negative inputs clamp to 0).
Where ``amax <= 2**-24`` the scale is treated as 1 and the output is 0.

Block INT4 (AWQ style, ``num_bits=4, block_sizes={-1: 128}``) is this class composed with a
:class:`~.granularity.Blocked` granularity; no separate element rule is needed.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import TINY_AMAX, QuantFormat, true_div, zero_where
from .granularity import Blocked, Granularity, PerTensor

__all__ = ["IntegerFormat"]


class IntegerFormat(QuantFormat):
    """Uniform symmetric integer quantization.

    Args:
        num_bits: 2..8.
        unsigned: use ``[0, 2**n - 1]``.
        narrow_range: signed range ``[-bound, bound]`` (True) or ``[-bound-1, bound]``.
        granularity: scale granularity (default per-tensor static).
        name: display name (default ``int{n}`` / ``uint{n}``).
    """

    def __init__(
        self,
        num_bits: int = 8,
        unsigned: bool = False,
        narrow_range: bool = True,
        granularity: Granularity | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(num_bits, int) or isinstance(num_bits, bool) or not 2 <= num_bits <= 8:
            raise ValueError(f"num_bits: integer formats support 2..8 bits, got {num_bits!r}")
        self.bits = num_bits
        self.unsigned = bool(unsigned)
        self.narrow_range = bool(narrow_range)
        self.granularity = granularity if granularity is not None else PerTensor()
        self.name = name or f"{'u' if unsigned else ''}int{num_bits}"
        if self.unsigned:
            self.bound = float(2**num_bits - 1)
            self.lo, self.hi = 0.0, self.bound
        else:
            self.bound = float(2 ** (num_bits - 1) - 1)
            self.lo = -self.bound if self.narrow_range else -self.bound - 1
            self.hi = self.bound
        self.max_value = self.bound

    @property
    def scale_bits(self) -> float:  # noqa: D102
        # Block scales are exported as float16 (AWQ/TensorRT-LLM layout).
        g = self.granularity
        return 16.0 / g.block_numel if isinstance(g, Blocked) and g.block_numel else 0.0

    def _scale(self, amax_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tiny = amax_v <= TINY_AMAX
        scale = torch.where(tiny, torch.ones_like(amax_v), true_div(self.bound, amax_v))
        return scale, tiny

    def _fake_quant_view(self, v: torch.Tensor, amax_v: torch.Tensor | None) -> torch.Tensor:
        assert amax_v is not None
        scale, tiny = self._scale(amax_v)
        q = torch.round(v * scale).clamp_(self.lo, self.hi)
        out = q.div_(scale)
        return zero_where(out, tiny)

    def _quantize_view(
        self, v: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert amax_v is not None
        scale, tiny = self._scale(amax_v)
        q = torch.round(v * scale).clamp_(self.lo, self.hi)
        q = q.masked_fill_(tiny, 0.0)
        codes = q.to(torch.uint8 if self.unsigned else torch.int8)
        return codes, {"scale": scale}

    def _dequantize_view(
        self, codes: torch.Tensor, scales: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return codes.float() / scales["scale"]

    def _kernel_call(
        self, view: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[str, tuple[Any, ...]] | None:
        g = self.granularity
        if isinstance(g, Blocked) and g.dynamic:
            return "int_dynamic_block", (view, self.bits, self.unsigned, self.narrow_range)
        if amax_v is None or sum(s != 1 for s in amax_v.shape) > 1:
            return None
        return "int", (view, amax_v, self.bits, self.unsigned, self.narrow_range)
