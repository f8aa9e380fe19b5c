"""OCP MX quantized tensors: MXFP8 (E4M3 elements) and MXFP4 (E2M1 elements).

Each block of 32 elements along the last dim shares a power-of-two scale ``2**e`` stored as
an E8M0 byte (``e + 127``). Numerics (DESIGN §2), float32::

    e     = ceil(log2(block_amax / elem_max)), clamped to [-127, 127]; block_amax == 0 -> -127
    code  = cast_to_elem(x / 2**e)
    value = elem_value(code) * 2**e

``ceil(log2(.))`` is computed with ``torch.log2`` and then corrected by one step where the
power of two misses the bound, so it is exact for every float32 ratio.
Storage: MXFP8 ``data`` float8_e4m3fn (logical shape), MXFP4 ``data`` uint8 two codes per byte;
``scales["scale"]`` uint8 E8M0 ``[..., nb]``.
"""

from __future__ import annotations

import torch

from .base import QTENSOR_TYPES, QTensor, check_float, last_dim_blocks, true_div
from .e2m1 import E2M1_MAX, decode_e2m1, encode_e2m1
from .packing import pack_nibbles, unpack_nibbles

__all__ = ["MXFP4QTensor", "MXFP8QTensor", "shared_exponent"]

_E4M3_MAX = 448.0


def shared_exponent(block_amax: torch.Tensor, elem_max: float) -> torch.Tensor:
    """Smallest ``e`` (int32) with ``block_amax / elem_max <= 2**e``, clamped to [-127, 127]."""
    r = true_div(block_amax.float(), elem_max)
    e = torch.ceil(torch.log2(r.clamp_min(2.0**-149))).clamp_(-127, 127).to(torch.int32)
    # log2 is not correctly rounded: step down while 2**(e-1) still covers r, up while 2**e
    # does not.
    for _ in range(2):
        down = torch.exp2((e - 1).float()) >= r
        e = torch.where(down & (e > -127), e - 1, e)
        up = torch.exp2(e.float()) < r
        e = torch.where(up & (e < 127), e + 1, e)
    return torch.where(block_amax == 0, torch.full_like(e, -127), e)


class _MXBase(QTensor):
    elem_max: float = 0.0

    @classmethod
    def quantize(  # type: ignore[override]
        cls, x: torch.Tensor, block_size: int = 32
    ) -> _MXBase:
        """Quantize ``x`` (float ``[..., n]``) in blocks of ``block_size`` along the last dim."""
        check_float(x)
        xb = last_dim_blocks(x.detach().float(), block_size)
        e = shared_exponent(xb.abs().amax(dim=-1, keepdim=True), cls.elem_max)
        codes = cls._encode(xb / torch.exp2(e.float()))
        codes = codes.reshape(*x.shape[:-1], -1)[..., : x.shape[-1]]
        scale = (e + 127).to(torch.uint8).squeeze(-1)
        return cls(cls._pack(codes), {"scale": scale}, x.shape, x.dtype, {"block_size": block_size})

    @staticmethod
    def _encode(y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _pack(codes: torch.Tensor) -> torch.Tensor:
        return codes

    def _values(self) -> torch.Tensor:
        raise NotImplementedError

    def _dequantize_f32(self) -> torch.Tensor:
        q = last_dim_blocks(self._values(), self.meta["block_size"])
        p = torch.exp2((self.scales["scale"].to(torch.int32) - 127).float()).unsqueeze(-1)
        return (q * p).flatten(-2)[..., : self.shape[-1]]


@QTENSOR_TYPES.register("mxfp8")
class MXFP8QTensor(_MXBase):
    """MXFP8: E4M3 elements (one byte each) with E8M0 scales per 32 elements."""

    elem_max = _E4M3_MAX

    @staticmethod
    def _encode(y: torch.Tensor) -> torch.Tensor:
        return y.clamp(-_E4M3_MAX, _E4M3_MAX).to(torch.float8_e4m3fn)

    def _values(self) -> torch.Tensor:
        return self.data.float()


@QTENSOR_TYPES.register("mxfp4")
class MXFP4QTensor(_MXBase):
    """MXFP4: E2M1 elements (two per byte, even index low) with E8M0 scales per 32."""

    elem_max = E2M1_MAX

    @staticmethod
    def _encode(y: torch.Tensor) -> torch.Tensor:
        return encode_e2m1(y)

    @staticmethod
    def _pack(codes: torch.Tensor) -> torch.Tensor:
        return pack_nibbles(codes)

    def _values(self) -> torch.Tensor:
        return decode_e2m1(unpack_nibbles(self.data, self.shape[-1], signed=False))
