"""NVFP4: E2M1 elements, one FP8 E4M3 scale per block of 16, one float32 global scale.

Numerics (DESIGN §2), float32:

    scale_2 = global_amax / (6 * 448)
    s       = block_amax / (6 * scale_2);  s == 0 -> 1;  clamp to [2**-9, 448]
    s       = s.to(float8_e4m3fn).float()
    d       = s * scale_2
    q       = round_half_even_to_e2m1_grid(x / d)     # saturating at +-6
    out     = q * d

``global_amax`` is the calibrated per-tensor amax (static, the default) or the input's own
absolute maximum (``dynamic_global=True``, ModelOpt's ``type="dynamic"``). Where
``global_amax <= 2**-24`` the output is 0 (scale_2 treated as 1 so nothing overflows).

Static blocks (``block_sizes["type"] == "static"``, ``static_blocks=True``): ``block_amax``
is the calibrated per-block amax (shape ``[num_blocks, 1]``) instead of the block's own
maximum, and ``global_amax`` is the largest of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .base import TINY_AMAX, QuantFormat, true_div, zero_where
from .granularity import Blocked, Granularity, PerTensor
from .minifloat import MINIFLOATS

__all__ = ["NVFP4Format"]

_E2M1 = MINIFLOATS["e2m1"]
_FP8_MAX = 448.0
_SCALE_MIN = 2.0**-9


class NVFP4Format(QuantFormat):
    """NVFP4 two-level scaled FP4.

    Args:
        block_sizes: blocks sharing one E4M3 scale (default ``{-1: 16}``).
        dynamic_global: compute the global amax from each input instead of calibrating it.
        static_blocks: calibrated per-block amax (``[num_blocks, 1]``) instead of dynamic
            block scales; the global amax is their maximum.
    """

    name = "nvfp4"
    bits = 4
    max_value = 6.0

    def __init__(
        self,
        block_sizes: Mapping[int, int | None] | None = None,
        dynamic_global: bool = False,
        static_blocks: bool = False,
    ) -> None:
        if dynamic_global and static_blocks:
            raise ValueError("type: dynamic nvfp4 cannot use static (calibrated) block scales")
        self.granularity = Blocked(dict(block_sizes or {-1: 16}), dynamic=not static_blocks)
        self.dynamic_global = dynamic_global
        self.static_blocks = static_blocks

    @property
    def scale_bits(self) -> float:  # noqa: D102
        g = self.granularity
        assert isinstance(g, Blocked)
        return 8.0 / g.block_numel if g.block_numel else 0.0

    @property
    def amax_granularity(self) -> Granularity | None:  # noqa: D102
        if self.static_blocks:
            return self.granularity
        return None if self.dynamic_global else PerTensor()

    def describe(self) -> str:  # noqa: D102
        g = self.granularity
        return f"nvfp4 {g.describe().replace(' dynamic', '')}" + (
            " dynamic" if self.dynamic_global else ""
        )

    def _view_amax(self, view: torch.Tensor, amax: torch.Tensor | None) -> torch.Tensor | None:
        if self.static_blocks:
            return super()._view_amax(view, amax)  # [num_blocks, 1]
        if self.dynamic_global:
            return view.abs().amax().float()
        if amax is None:
            raise ValueError("amax: nvfp4 needs a calibrated global amax (or type='dynamic')")
        if not isinstance(amax, torch.Tensor):
            amax = torch.as_tensor(amax, dtype=torch.float32, device=view.device)
        if amax.numel() != 1:
            raise ValueError(f"amax: nvfp4 takes one global amax, got shape {tuple(amax.shape)}")
        return amax.reshape(()).to(device=view.device, dtype=torch.float32)

    def _scales(self, v: torch.Tensor, amax_v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.static_blocks:
            block_amax, global_amax = amax_v, amax_v.max()
        else:
            block_amax, global_amax = v.abs().amax(dim=-1, keepdim=True), amax_v
        tiny = global_amax <= TINY_AMAX
        scale_2 = torch.where(
            tiny, torch.ones_like(global_amax), true_div(global_amax, 6.0 * _FP8_MAX)
        )
        s = block_amax / (6.0 * scale_2)
        s = torch.where(s == 0, torch.ones_like(s), s)
        s8 = s.clamp_(_SCALE_MIN, _FP8_MAX).to(torch.float8_e4m3fn)
        d = s8.float() * scale_2
        return s8, scale_2, d, tiny

    def _fake_quant_view(self, v: torch.Tensor, amax_v: torch.Tensor | None) -> torch.Tensor:
        assert amax_v is not None
        _, _, d, tiny = self._scales(v, amax_v)
        out = _E2M1.round(v / d).mul_(d)
        return zero_where(out, tiny)

    def _quantize_view(
        self, v: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert amax_v is not None
        s8, scale_2, d, tiny = self._scales(v, amax_v)
        codes = zero_where(_E2M1.encode(v / d), tiny)
        return codes, {"block_scale": s8, "global_scale": scale_2}

    def _dequantize_view(
        self, codes: torch.Tensor, scales: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        d = scales["block_scale"].float() * scales["global_scale"]
        return _E2M1.decode(codes) * d

    def _kernel_call(
        self, view: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[str, tuple[Any, ...]] | None:
        g = self.granularity
        assert isinstance(g, Blocked)
        if g.block_sizes != {-1: 16} or amax_v is None or self.static_blocks:
            return None
        return "nvfp4", (view, amax_v)
