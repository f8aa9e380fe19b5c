"""FP4 E2M1 element codes (OCP MX / NVFP4 element type).

Code ``s eem``: bit 3 is the sign, the low three bits index the magnitudes
``0, 0.5, 1, 1.5, 2, 3, 4, 6``. Rounding is to the nearest magnitude with ties to the even
code, saturating at 6 (one ``bucketize`` over the midpoints).
"""

from __future__ import annotations

import torch

__all__ = ["E2M1_MAX", "decode_e2m1", "encode_e2m1"]

E2M1_MAX = 6.0
_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# Midpoints between neighbouring magnitudes. A tie rounds to the even code: for the
# midpoints 0.75 (codes 1|2), 1.75 (3|4) and 3.5 (5|6) that is upwards, for the others
# downwards. The code of |y| is the number of thresholds strictly below it, with each
# upward-tie midpoint lowered to the next float32 below it (so that the tie itself counts).
_UP_TIES = (0.75, 1.75, 3.5)
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
_THRESHOLDS: dict[torch.device, torch.Tensor] = {}


def _thresholds(device: torch.device) -> torch.Tensor:
    if device not in _THRESHOLDS:
        t = torch.tensor(_MIDPOINTS, dtype=torch.float32)
        up = torch.tensor([m in _UP_TIES for m in _MIDPOINTS])
        t = torch.where(up, torch.nextafter(t, torch.zeros_like(t)), t)
        _THRESHOLDS[device] = t.to(device)
    return _THRESHOLDS[device]


def encode_e2m1(y: torch.Tensor) -> torch.Tensor:
    """Round float32 ``y`` to E2M1 and return uint8 codes (one per byte, same shape)."""
    idx = torch.bucketize(y.abs(), _thresholds(y.device), right=False).to(torch.uint8)
    return idx | (torch.signbit(y).to(torch.uint8) << 3)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """Float32 values of uint8 E2M1 codes (any shape)."""
    table = torch.tensor(_MAGNITUDES, dtype=torch.float32, device=codes.device)
    mag = table[(codes & 0x07).long()]
    return torch.where((codes & 0x08) != 0, -mag, mag)
