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


#: Elements per block of the interleaved INT4 GEMV layout (16 int32 words).
INTERLEAVE_BLOCK = 128


def interleave_int4_words(packed: torch.Tensor) -> torch.Tensor:
    """Repack INT4 codes for the decode GEMV: uint8 ``[N, K/2]`` -> int32 ``[N, K/8]``.

    Layout (``K`` a multiple of 128): each block of 128 elements along K becomes 16 int32
    words; word ``j`` of block ``b`` holds the element pairs ``P = 16 s + j`` (``s`` = 0..3),
    element ``128 b + 2P`` in nibble ``s`` (bits ``4s..4s+3``) and element ``128 b + 2P + 1``
    in nibble ``s + 4`` (bits ``16+4s..19+4s``). So the 16-bit halves of
    ``(word >> 4s) & 0x000F000F`` hold one pair of adjacent elements, the same pair a 32-bit
    load of the activations holds, and for a fixed ``s`` the pairs of consecutive words are
    consecutive: the GEMV loads activations with 16-byte vectors in the weights' layout.
    The stored codes stay the plain packing (``QuantizedWeight.data``); this is an extra copy.
    """
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(
            f"packed: expected a 2-D uint8 tensor, got {packed.dtype} {packed.dim()}-D"
        )
    n, half = packed.shape
    k = 2 * half
    if k % INTERLEAVE_BLOCK:
        raise ValueError(f"packed: K={k} must be a multiple of {INTERLEAVE_BLOCK}")
    c = unpack_nibbles(packed).to(torch.int64).reshape(n, k // INTERLEAVE_BLOCK, 4, 16, 2)
    c = c.permute(0, 1, 3, 4, 2).reshape(n, k // INTERLEAVE_BLOCK, 16, 8)  # nibble p = 4h + s
    shifts = torch.arange(0, 32, 4, device=packed.device, dtype=torch.int64)
    words = (c << shifts).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words)  # as two's complement int32
    return words.to(torch.int32).reshape(n, k // 8)


def deinterleave_int4_words(words: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`interleave_int4_words`: int32 ``[N, K/8]`` -> uint8 ``[N, K/2]``."""
    n, kw = words.shape
    k = kw * 8
    w = words.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(0, 32, 4, device=words.device, dtype=torch.int64)
    c = ((w[..., None] >> shifts) & 15).reshape(n, k // INTERLEAVE_BLOCK, 16, 2, 4)
    c = c.permute(0, 1, 4, 2, 3).reshape(n, k)
    return pack_nibbles(c)


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
