"""Packing of 4-bit codes two per byte, and the E2M1 (FP4) code table.

Layout (DESIGN.md §2): along the last dim, element ``2j`` goes to the low nibble of byte
``j`` and element ``2j + 1`` to the high nibble. INT4 codes are two's complement nibbles
(-8..7; symmetric quantizers use -7..7). E2M1 codes are ``sign << 3 | exponent << 1 | mantissa``.
"""

from __future__ import annotations

import torch

#: E2M1 magnitudes by 3-bit code (exponent bits, mantissa bit).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes (any integer dtype, low 4 bits used) two per byte.

    Args:
        codes: ``[..., K]`` with even ``K``.

    Returns:
        uint8 ``[..., K // 2]``; byte ``j`` holds ``codes[2j]`` (low) and ``codes[2j+1]`` (high).
    """
    if codes.shape[-1] % 2:
        raise ValueError(f"codes: last dim must be even to pack two per byte, got {codes.shape}")
    c = codes.to(torch.int32) & 0xF
    return (c[..., 0::2] | (c[..., 1::2] << 4)).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: uint8 ``[..., K/2]`` -> int32 codes 0..15 ``[..., K]``."""
    p = packed.to(torch.int32)
    return torch.stack([p & 0xF, p >> 4], dim=-1).flatten(-2)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack signed INT4 values in [-8, 7] (``[..., K]``) into uint8 ``[..., K/2]``."""
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError("q: INT4 values must lie in [-8, 7]")
    return pack_nibbles(q)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Unpack uint8 ``[..., K/2]`` into int8 INT4 values ``[..., K]`` (sign-extended)."""
    c = unpack_nibbles(packed)
    return ((c ^ 8) - 8).to(torch.int8)


def e2m1_round(v: torch.Tensor) -> torch.Tensor:
    """Round float32 ``v`` to the nearest E2M1 value, ties to even, saturating at ±6.

    Same rule as the fake quantizer (the grid step is 0.5 below 2, then the binade's step).
    """
    v = v.float().clamp(-6.0, 6.0)
    a = v.abs()
    _, ex = torch.frexp(a)  # a = m * 2**ex, m in [0.5, 1): floor(log2 a) = ex - 1
    step = torch.ldexp(torch.ones_like(a), torch.clamp(ex - 1, min=0) - 1)
    return torch.copysign(torch.round(a / step) * step, v)


def e2m1_encode(v: torch.Tensor) -> torch.Tensor:
    """Codes of values already on the E2M1 grid (±{0, .5, 1, 1.5, 2, 3, 4, 6}); int32 0..15."""
    table = torch.tensor(E2M1_VALUES, device=v.device)
    mag = v.abs().float()
    idx = (mag[..., None] == table).to(torch.int32).argmax(-1)
    if not torch.equal(table[idx], mag):
        raise ValueError("v: values must lie on the E2M1 grid")
    return idx | (torch.signbit(v).to(torch.int32) << 3)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """float32 values of E2M1 codes 0..15."""
    table = torch.tensor(E2M1_VALUES, device=codes.device)
    c = codes.to(torch.int64)
    mag = table[c & 7]
    return torch.where((c & 8) != 0, -mag, mag)
