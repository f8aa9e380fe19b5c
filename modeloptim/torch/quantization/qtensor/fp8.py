"""FP8 E4M3 quantized tensors: per-tensor, per-channel, and block scales.

Numerics (DESIGN §2), float32: ``scale = 448 / amax``, ``code = fp8(clamp(x * scale, ±448))``
(round to nearest even), ``value = float(code) * (1 / scale)``; ``amax <= 2**-24`` gives
code 0. ``scales["scale"]`` stores the multiplier ``448 / amax``; serving engines want
``amax / 448`` (:meth:`FP8QTensor.weight_scale`).

Blocks: ``block_size=b`` scales blocks of ``b`` along the last dim (``scale [..., nb]``);
``block_size=(br, bc)`` scales 2-D tiles of a matrix (``scale [ceil(R/br), ceil(C/bc)]``),
as in DeepSeek-style 128x128 FP8 weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import QTENSOR_TYPES, TINY_AMAX, QTensor, check_float, true_div

__all__ = ["FP8_MAX", "FP8QTensor"]

FP8_MAX = 448.0


def _fp8_scale(amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    amax = amax.float()
    if bool((amax < 0).any()) or bool(torch.isnan(amax).any()):
        raise ValueError("amax: expected non-negative, non-NaN values")
    tiny = amax <= TINY_AMAX
    return torch.where(tiny, torch.ones_like(amax), true_div(FP8_MAX, amax)), tiny


def _tiles(x: torch.Tensor, br: int, bc: int) -> torch.Tensor:
    """Pad 2-D ``x`` to tile multiples and view it ``[nrb, br, ncb, bc]``."""
    r, c = x.shape
    xp = F.pad(x, (0, (-c) % bc, 0, (-r) % br))
    return xp.reshape(xp.shape[0] // br, br, xp.shape[1] // bc, bc)


@QTENSOR_TYPES.register("fp8_e4m3")
class FP8QTensor(QTensor):
    """FP8 E4M3 codes (``torch.float8_e4m3fn``, logical shape) with float32 scales."""

    @classmethod
    def quantize(  # type: ignore[override]
        cls,
        x: torch.Tensor,
        amax: torch.Tensor | None = None,
        block_size: int | tuple[int, int] | None = None,
    ) -> FP8QTensor:
        """Quantize ``x``.

        Args:
            x: float tensor.
            amax: without ``block_size``: broadcastable to ``x`` (default ``x``'s max).
                With ``block_size``: one value per block (row-major) or ``None`` (dynamic).
            block_size: ``None`` (per-tensor/per-channel), an int (blocks along the last dim)
                or ``(rows, cols)`` tiles of a 2-D tensor.
        """
        check_float(x)
        xf = x.detach().float()
        if block_size is None:
            amax = xf.abs().amax() if amax is None else amax.float().to(x.device)
            try:
                torch.broadcast_shapes(amax.shape, x.shape)
            except RuntimeError as err:
                raise ValueError(
                    f"amax: shape {tuple(amax.shape)} does not broadcast to x {tuple(x.shape)}"
                ) from err
            scale, tiny = _fp8_scale(amax)
            codes = (xf.masked_fill(tiny, 0.0) * scale).clamp_(-FP8_MAX, FP8_MAX)
            return cls(
                codes.to(torch.float8_e4m3fn), {"scale": scale}, x.shape, x.dtype, {"block": None}
            )
        br, bc = (1, block_size) if isinstance(block_size, int) else block_size
        if br != 1 and x.ndim != 2:
            raise ValueError(
                f"block_size: 2-D tiles {block_size} need a 2-D tensor, got {x.ndim}-D"
            )
        x2 = xf.reshape(-1, x.shape[-1])
        t = _tiles(x2, br, bc)
        if amax is None:
            amax_t = t.abs().amax(dim=(1, 3), keepdim=True)
        else:
            nb = t.shape[0] * t.shape[2]
            if amax.numel() != nb:
                raise ValueError(f"amax: {amax.numel()} values, expected one per block ({nb})")
            amax_t = amax.float().reshape(t.shape[0], 1, t.shape[2], 1).to(x.device)
        scale, tiny = _fp8_scale(amax_t)
        codes = (t.masked_fill(tiny, 0.0) * scale).clamp_(-FP8_MAX, FP8_MAX)
        codes = codes.reshape(t.shape[0] * br, t.shape[2] * bc)[: x2.shape[0], : x2.shape[1]]
        scale2d = scale.reshape(t.shape[0], t.shape[2])
        if br == 1:
            scale2d = scale2d.reshape(*x.shape[:-1], -1)
        return cls(
            codes.reshape(x.shape).to(torch.float8_e4m3fn),
            {"scale": scale2d},
            x.shape,
            x.dtype,
            {"block": [br, bc]},
        )

    def _dequantize_f32(self) -> torch.Tensor:
        scale = self.scales["scale"]
        block = self.meta.get("block")
        if block is None:
            return self.data.float() * true_div(1.0, scale)
        br, bc = block
        x2 = self.data.float().reshape(-1, self.shape[-1])
        t = _tiles(x2, br, bc)
        out = t * true_div(1.0, scale.reshape(t.shape[0], 1, t.shape[2], 1))
        out = out.reshape(t.shape[0] * br, t.shape[2] * bc)[: x2.shape[0], : x2.shape[1]]
        return out.reshape(self.shape)

    def weight_scale(self) -> torch.Tensor:
        """Multiplicative dequantization scale ``amax / 448`` (serving-engine convention)."""
        return true_div(1.0, self.scales["scale"])
