"""Bit packing shared by the 4-bit formats (INT4, FP4 E2M1).

Two 4-bit codes share one byte: the element with the even index along the last dim goes in
the low nibble, the odd one in the high nibble (DESIGN §2; the layout ModelOpt, vLLM and
TensorRT-LLM read). Odd lengths are padded with a zero code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pack_nibbles", "unpack_nibbles"]


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes two per byte along the last dim.

    Args:
        codes: integer tensor ``[..., n]`` whose low 4 bits are the codes (int8 two's
            complement values in [-8, 7] or uint8 codes in [0, 15]).

    Returns:
        uint8 tensor ``[..., ceil(n / 2)]``.
    """
    if codes.dtype not in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
        raise TypeError(f"codes: expected an integer tensor, got dtype {codes.dtype}")
    c = codes.to(torch.int16) & 0x0F
    if c.shape[-1] % 2:
        c = F.pad(c, (0, 1))
    return (c[..., 0::2] | (c[..., 1::2] << 4)).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor, n: int, signed: bool) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`.

    Args:
        packed: uint8 tensor ``[..., m]``.
        n: number of codes along the last dim to return (``<= 2 * m``).
        signed: return int8 values in [-8, 7] (two's complement nibbles) instead of uint8
            codes in [0, 15].

    Returns:
        ``[..., n]`` int8 (signed) or uint8 tensor.
    """
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed: expected uint8, got dtype {packed.dtype}")
    if n > 2 * packed.shape[-1]:
        raise ValueError(f"n: {n} codes do not fit in {packed.shape[-1]} bytes")
    p = packed.to(torch.int16)
    out = torch.stack((p & 0x0F, p >> 4), dim=-1).flatten(-2)[..., :n]
    if signed:
        out = torch.where(out >= 8, out - 16, out)
        return out.to(torch.int8)
    return out.to(torch.uint8)
