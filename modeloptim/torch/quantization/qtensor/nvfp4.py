"""NVFP4 quantized tensors: E2M1 codes, FP8 E4M3 scale per 16 elements, float32 global scale.

Numerics (DESIGN §2), float32::

    scale_2 = global_amax / (6 * 448)            (1 where global_amax <= 2**-24: all codes 0)
    s       = block_amax / (6 * scale_2); s == 0 -> 1; clamp to [2**-9, 448]; cast to E4M3
    d       = float(s) * scale_2
    code    = e2m1(x / d)                         (nearest, ties to even, saturating at 6)
    value   = e2m1_value(code) * d

Storage (what ModelOpt NVFP4 checkpoints hold): ``data`` uint8 ``[..., ceil(n / 2)]`` (two
codes per byte, even index low), ``scales["block_scale"]`` float8_e4m3fn ``[..., nb]``,
``scales["scale_2"]`` float32 0-d. That is 4 + 8/16 = 4.5 bits per element.
"""

from __future__ import annotations

import torch

from .base import QTENSOR_TYPES, TINY_AMAX, QTensor, check_float, last_dim_blocks, true_div
from .e2m1 import decode_e2m1, encode_e2m1
from .packing import pack_nibbles, unpack_nibbles

__all__ = ["NVFP4QTensor"]

_FP8_MAX = 448.0
_E2M1_MAX = 6.0
_SCALE_MIN = 2.0**-9


@QTENSOR_TYPES.register("nvfp4")
class NVFP4QTensor(QTensor):
    """NVFP4 two-level scaled FP4 (blocks of 16 along the last dim)."""

    @classmethod
    def quantize(  # type: ignore[override]
        cls, x: torch.Tensor, global_amax: torch.Tensor | None = None, block_size: int = 16
    ) -> NVFP4QTensor:
        """Quantize ``x``.

        Args:
            x: float tensor ``[..., n]``.
            global_amax: calibrated per-tensor amax (one value); default ``x``'s own max.
            block_size: elements per E4M3 scale (16 in NVFP4).
        """
        check_float(x)
        xb = last_dim_blocks(x.detach().float(), block_size)
        if global_amax is None:
            g = xb.abs().amax()
        else:
            if global_amax.numel() != 1:
                raise ValueError(
                    f"global_amax: expected one value, got shape {tuple(global_amax.shape)}"
                )
            g = global_amax.float().reshape(()).to(x.device)
        if bool(g < 0) or bool(torch.isnan(g)):
            raise ValueError("global_amax: expected a non-negative, non-NaN value")
        tiny = bool(g <= TINY_AMAX)
        scale_2 = torch.ones_like(g) if tiny else true_div(g, _E2M1_MAX * _FP8_MAX)
        s = xb.abs().amax(dim=-1, keepdim=True) / (_E2M1_MAX * scale_2)
        s = torch.where(s == 0, torch.ones_like(s), s).clamp_(_SCALE_MIN, _FP8_MAX)
        s8 = s.to(torch.float8_e4m3fn)
        codes = encode_e2m1(xb / (s8.float() * scale_2))
        if tiny:
            codes.zero_()
        codes = codes.reshape(*x.shape[:-1], -1)[..., : x.shape[-1]]
        scales = {"block_scale": s8.squeeze(-1), "scale_2": scale_2}
        return cls(pack_nibbles(codes), scales, x.shape, x.dtype, {"block_size": block_size})

    def codes(self) -> torch.Tensor:
        """Unpacked uint8 E2M1 codes in the logical shape."""
        return unpack_nibbles(self.data, self.shape[-1], signed=False)

    def _dequantize_f32(self) -> torch.Tensor:
        q = last_dim_blocks(decode_e2m1(self.codes()), self.meta["block_size"])
        d = self.scales["block_scale"].float().unsqueeze(-1) * self.scales["scale_2"]
        return (q * d).flatten(-2)[..., : self.shape[-1]]
