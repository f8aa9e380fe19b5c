"""Small floating-point element grids without inf/NaN (OCP FP4 E2M1, FP6 E3M2 / E2M3).

Values are rounded to the nearest grid value; a tie goes to the value whose code is even
(round half to even on the mantissa), and magnitudes above the largest value saturate.
Rounding is a binary search of ``|v|`` over the midpoints between neighbouring grid values
(``torch.bucketize``); a midpoint that must round *up* (its upper neighbour has the even code)
is replaced by the next float32 below it, so that ``bucketize(right=False)`` sends exact ties
the right way. The bucket index is the magnitude code, so the same search yields codes for
real quantization: ``code = sign << (e + m) | magnitude_index``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["MINIFLOATS", "MiniFloat"]


@dataclass(frozen=True)
class MiniFloat:
    """A sign-magnitude float with ``e`` exponent and ``m`` mantissa bits, no inf/NaN.

    Attributes:
        name: e.g. ``"e2m1"``.
        ebits: exponent bits.
        mbits: mantissa bits.
    """

    name: str
    ebits: int
    mbits: int
    _cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def bias(self) -> int:
        """Exponent bias ``2**(e-1) - 1``."""
        return 2 ** (self.ebits - 1) - 1

    @property
    def bits(self) -> int:
        """Total bits per element, sign included."""
        return 1 + self.ebits + self.mbits

    def magnitudes(self) -> list[float]:
        """All non-negative values, ordered by code (code i -> value i)."""
        vals = []
        for code in range(2 ** (self.ebits + self.mbits)):
            exp_field, mant = divmod(code, 2**self.mbits)
            if exp_field == 0:  # subnormal
                vals.append(mant * 2.0 ** (1 - self.bias - self.mbits))
            else:
                vals.append((1 + mant / 2**self.mbits) * 2.0 ** (exp_field - self.bias))
        return vals

    @property
    def max_value(self) -> float:
        """Largest finite magnitude (e.g. 6 for E2M1)."""
        return self.magnitudes()[-1]

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._cache:
            mags = self.magnitudes()
            bounds = []
            for i in range(len(mags) - 1):
                mid = torch.tensor((mags[i] + mags[i + 1]) / 2, dtype=torch.float32)
                if (i + 1) % 2 == 0:  # upper neighbour has the even code: ties round up
                    mid = torch.nextafter(mid, torch.tensor(-1.0))
                bounds.append(float(mid))
            self._cache[device] = (
                torch.tensor(mags, dtype=torch.float32, device=device),
                torch.tensor(bounds, dtype=torch.float32, device=device),
            )
        return self._cache[device]

    def magnitude_codes(self, v: torch.Tensor) -> torch.Tensor:
        """Index of the rounded ``|v|`` on the grid (int64, same shape as ``v``)."""
        _, bounds = self._tables(v.device)
        return torch.bucketize(v.abs(), bounds)

    def round(self, v: torch.Tensor) -> torch.Tensor:
        """Round float32 ``v`` onto the grid (half to even, saturating), keeping the sign."""
        mags, _ = self._tables(v.device)
        return torch.copysign(mags[self.magnitude_codes(v)], v)

    def encode(self, v: torch.Tensor) -> torch.Tensor:
        """uint8 codes of ``v`` (sign in bit ``e + m``), unpacked one per byte."""
        sign = (torch.signbit(v)).to(torch.uint8) << (self.ebits + self.mbits)
        return sign | self.magnitude_codes(v).to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Float32 values of uint8 codes."""
        mags, _ = self._tables(codes.device)
        n = self.ebits + self.mbits
        mag = mags[(codes & (2**n - 1)).long()]
        return torch.where((codes >> n) & 1 == 1, -mag, mag)


MINIFLOATS: dict[str, MiniFloat] = {
    "e2m1": MiniFloat("e2m1", 2, 1),
    "e3m2": MiniFloat("e3m2", 3, 2),
    "e2m3": MiniFloat("e2m3", 2, 3),
}
