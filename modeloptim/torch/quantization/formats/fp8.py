"""FP8 formats: E4M3 (``float8_e4m3fn``, max 448) and E5M2 (``float8_e5m2``, max 57344).

Numerics (DESIGN §2), float32:

    scale = fmax / amax
    y     = clamp(x * scale, -fmax, fmax).to(float8).float()    # round to nearest even
    out   = y * (1 / scale)                                     # float32 reciprocal

Where ``amax <= 2**-24`` the scale is treated as 1 and the output is 0. Any granularity
(per-tensor, per-channel, static or dynamic blocks such as ``{-1: 128, -2: 128}``).
Block scales count as float32 in :attr:`bits_per_element`.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import TINY_AMAX, QuantFormat, true_div, zero_where
from .granularity import Blocked, Granularity, PerTensor

__all__ = ["FP8_SPECS", "FP8Format"]

#: exponent bits -> (name, torch dtype, max value)
FP8_SPECS: dict[int, tuple[str, torch.dtype, float]] = {
    4: ("fp8_e4m3", torch.float8_e4m3fn, 448.0),
    5: ("fp8_e5m2", torch.float8_e5m2, 57344.0),
}


class FP8Format(QuantFormat):
    """Scaled FP8 quantization.

    Args:
        exponent_bits: 4 (E4M3) or 5 (E5M2).
        granularity: scale granularity (default per-tensor static).
    """

    def __init__(self, exponent_bits: int = 4, granularity: Granularity | None = None) -> None:
        if exponent_bits not in FP8_SPECS:
            raise ValueError(
                f"num_bits: FP8 supports (4, 3) and (5, 2), got exponent bits {exponent_bits!r}"
            )
        self.exponent_bits = exponent_bits
        self.name, self.dtype, self.max_value = FP8_SPECS[exponent_bits]
        self.bits = 8
        self.granularity = granularity if granularity is not None else PerTensor()

    @property
    def scale_bits(self) -> float:  # noqa: D102
        g = self.granularity
        return 32.0 / g.block_numel if isinstance(g, Blocked) and g.block_numel else 0.0

    def _scale(self, amax_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tiny = amax_v <= TINY_AMAX
        scale = torch.where(tiny, torch.ones_like(amax_v), true_div(self.max_value, amax_v))
        return scale, tiny

    def _codes(self, v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return (v * scale).clamp_(-self.max_value, self.max_value).to(self.dtype)

    def _fake_quant_view(self, v: torch.Tensor, amax_v: torch.Tensor | None) -> torch.Tensor:
        assert amax_v is not None
        scale, tiny = self._scale(amax_v)
        out = self._codes(v, scale).float().mul_(true_div(1.0, scale))
        return zero_where(out, tiny)

    def _quantize_view(
        self, v: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert amax_v is not None
        scale, tiny = self._scale(amax_v)
        codes = self._codes(v.masked_fill(tiny, 0.0), scale)
        return codes, {"scale": scale}

    def _dequantize_view(
        self, codes: torch.Tensor, scales: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return codes.float() * true_div(1.0, scales["scale"])

    def _kernel_call(
        self, view: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[str, tuple[Any, ...]] | None:
        g = self.granularity
        if isinstance(g, Blocked) and g.dynamic:
            return "fp8_dynamic_block", (view, self.exponent_bits)
        if amax_v is None or sum(s != 1 for s in amax_v.shape) > 1:
            return None
        return "fp8", (view, amax_v, self.exponent_bits)
