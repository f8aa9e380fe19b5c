"""Integer quantized tensors: INT8 (per-tensor / per-channel) and block INT4 (AWQ style).

Numerics (DESIGN §2), float32: ``scale = bound / amax``, ``q = clamp(round_half_even(x *
scale), lo, hi)``, ``value = q / scale``; ``amax <= 2**-24`` gives code 0 and scale 1.
The stored ``scale`` is that multiplier (``bound / amax``); serving formats want its inverse
(``amax / bound``), which :meth:`INT8QTensor.weight_scale` returns.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import QTENSOR_TYPES, TINY_AMAX, QTensor, check_float, last_dim_blocks, true_div
from .packing import pack_nibbles, unpack_nibbles

__all__ = ["INT4BlockQTensor", "INT8QTensor", "int_scale"]


def int_scale(amax: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, tiny)``: ``bound / amax`` (1 where ``amax <= 2**-24``) and that mask."""
    amax = amax.float()
    if bool((amax < 0).any()) or bool(torch.isnan(amax).any()):
        raise ValueError("amax: expected non-negative, non-NaN values")
    tiny = amax <= TINY_AMAX
    return torch.where(tiny, torch.ones_like(amax), true_div(bound, amax)), tiny


def _check_amax(amax: Any, name: str = "amax") -> torch.Tensor:
    if not isinstance(amax, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(amax).__name__}")
    return amax


@QTENSOR_TYPES.register("int8")
class INT8QTensor(QTensor):
    """Signed 8-bit integer codes, one byte each, with a per-tensor or per-channel scale.

    ``data`` is int8 with the logical shape; ``scales["scale"]`` is float32 and broadcasts
    against it (0-d for per-tensor, e.g. ``[out, 1]`` for per-output-channel weights).
    """

    @classmethod
    def quantize(  # type: ignore[override]
        cls,
        x: torch.Tensor,
        amax: torch.Tensor | None = None,
        narrow_range: bool = True,
    ) -> INT8QTensor:
        """Quantize ``x`` with ``amax`` (broadcastable to ``x``; default: ``x``'s own max)."""
        check_float(x)
        amax = x.detach().abs().amax().float() if amax is None else _check_amax(amax)
        try:
            torch.broadcast_shapes(amax.shape, x.shape)
        except RuntimeError as err:
            raise ValueError(
                f"amax: shape {tuple(amax.shape)} does not broadcast to x {tuple(x.shape)}"
            ) from err
        if amax.ndim > x.ndim:
            amax = amax.reshape(amax.shape[amax.ndim - x.ndim :])
        scale, tiny = int_scale(amax.to(x.device), 127.0)
        lo = -127.0 if narrow_range else -128.0
        q = torch.round(x.detach().float() * scale).clamp_(lo, 127.0).masked_fill_(tiny, 0.0)
        return cls(
            q.to(torch.int8), {"scale": scale}, x.shape, x.dtype, {"narrow_range": narrow_range}
        )

    def _dequantize_f32(self) -> torch.Tensor:
        return self.data.float() / self.scales["scale"]

    def weight_scale(self) -> torch.Tensor:
        """Multiplicative dequantization scale ``amax / 127`` (serving-engine convention)."""
        return true_div(1.0, self.scales["scale"])


@QTENSOR_TYPES.register("int4_block")
class INT4BlockQTensor(QTensor):
    """Signed 4-bit codes in blocks along the last dim, two codes per byte.

    ``data``: uint8 ``[..., ceil(n / 2)]`` (even index in the low nibble, two's complement
    nibbles); ``scales["scale"]``: float32 ``[..., num_blocks]`` (``7 / block_amax``). The last
    dim is zero-padded to a multiple of the block size for scaling only.
    """

    @classmethod
    def quantize(  # type: ignore[override]
        cls,
        x: torch.Tensor,
        amax: torch.Tensor | None = None,
        block_size: int = 128,
        narrow_range: bool = True,
    ) -> INT4BlockQTensor:
        """Quantize ``x`` in blocks of ``block_size`` along the last dim.

        Args:
            x: float tensor ``[..., n]``.
            amax: per-block amax with ``prod(x.shape[:-1]) * ceil(n / block_size)`` values
                (row-major), or ``None`` to use each block's own maximum.
            block_size: elements per scale.
            narrow_range: codes in [-7, 7] (True, DESIGN default) or [-8, 7].
        """
        check_float(x)
        xb = last_dim_blocks(x.detach().float(), block_size)
        if amax is None:
            amax_b = xb.abs().amax(dim=-1, keepdim=True)
        else:
            amax = _check_amax(amax)
            if amax.numel() != xb.shape[:-1].numel():
                raise ValueError(
                    f"amax: {amax.numel()} values, expected one per block "
                    f"({xb.shape[:-1].numel()} blocks of {block_size})"
                )
            amax_b = amax.reshape(*xb.shape[:-1], 1).to(x.device)
        scale, tiny = int_scale(amax_b, 7.0)
        lo = -7.0 if narrow_range else -8.0
        q = torch.round(xb * scale).clamp_(lo, 7.0).masked_fill_(tiny, 0.0)
        q = q.reshape(*x.shape[:-1], -1)[..., : x.shape[-1]].to(torch.int8)
        meta = {"block_size": block_size, "narrow_range": narrow_range}
        return cls(pack_nibbles(q), {"scale": scale.squeeze(-1)}, x.shape, x.dtype, meta)

    def codes(self) -> torch.Tensor:
        """Unpacked int8 codes in the logical shape."""
        return unpack_nibbles(self.data, self.shape[-1], signed=True)

    def _dequantize_f32(self) -> torch.Tensor:
        q = last_dim_blocks(self.codes().float(), self.meta["block_size"])
        out = (q / self.scales["scale"].unsqueeze(-1)).flatten(-2)
        return out[..., : self.shape[-1]]

    def weight_scale(self) -> torch.Tensor:
        """Multiplicative per-block scale ``block_amax / 7``, ``[..., num_blocks]``."""
        return true_div(1.0, self.scales["scale"])
