"""FP4 E2M1 element codes (OCP MX / NVFP4 element type).

Code ``s eem``: bit 3 is the sign, the low three bits index the magnitudes
``0, 0.5, 1, 1.5, 2, 3, 4, 6``. Rounding is to the nearest magnitude with ties to the even
code, saturating at 6; it is written as threshold counts so it stays independent of the
fake-quant implementation it is tested against.
"""

from __future__ import annotations

import torch

__all__ = ["E2M1_MAX", "decode_e2m1", "encode_e2m1"]

E2M1_MAX = 6.0
_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# Midpoints between neighbouring magnitudes. A tie rounds to the even code: for the
# midpoints 0.75 (codes 1|2), 1.75 (3|4) and 3.5 (5|6) that is upwards, so they count
# with ">="; every other tie rounds down and counts with ">".
_UP_TIES = (0.75, 1.75, 3.5)
_DOWN_TIES = (0.25, 1.25, 2.5, 5.0)


def encode_e2m1(y: torch.Tensor) -> torch.Tensor:
    """Round float32 ``y`` to E2M1 and return uint8 codes (one per byte, same shape)."""
    a = y.abs()
    idx = torch.zeros(a.shape, dtype=torch.uint8, device=a.device)
    for t in _DOWN_TIES:
        idx += (a > t).to(torch.uint8)
    for t in _UP_TIES:
        idx += (a >= t).to(torch.uint8)
    return idx | (torch.signbit(y).to(torch.uint8) << 3)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """Float32 values of uint8 E2M1 codes (any shape)."""
    table = torch.tensor(_MAGNITUDES, dtype=torch.float32, device=codes.device)
    mag = table[(codes & 0x07).long()]
    return torch.where((codes & 0x08) != 0, -mag, mag)
