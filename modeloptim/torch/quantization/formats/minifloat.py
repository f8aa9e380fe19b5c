"""Small floating-point element grids without inf/NaN (OCP FP4 E2M1, FP6 E3M2 / E2M3).

Values are rounded to the nearest grid value; a tie goes to the value whose code is even
(round half to even on the mantissa), and magnitudes above the largest value saturate.

Rounding is arithmetic: with ``e = max(floor(log2 |v|), emin)`` (exact, from ``frexp``) the
grid spacing around ``|v|`` is ``step = 2**(e - mbits)``, so ``round_half_even(|v| / step) *
step`` (exact: ``step`` is a power of two) is the nearest grid value, ties to even; then
clamp to the largest value and restore the sign. At the top of a binade the rounded value
may be ``2**(e+1)``, which is the next binade's first (even) grid value, as it should be.
Codes for real quantization are the rank of the rounded magnitude on the grid (a binary
search over the midpoints), ``code = sign << (e + m) | magnitude_index``.
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
        return (2 - 2.0**-self.mbits) * 2.0 ** (2**self.ebits - 1 - self.bias)

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
        # The rounded magnitude sits exactly on a grid point, far from every midpoint.
        return torch.bucketize(self.round(v).abs(), bounds)

    def round(self, v: torch.Tensor) -> torch.Tensor:
        """Round float32 ``v`` onto the grid (half to even, saturating), keeping the sign."""
        a = v.abs()
        _, k = torch.frexp(a)  # a = m * 2**k with m in [0.5, 1): floor(log2 a) = k - 1
        e = (k - 1).clamp_(min=1 - self.bias)
        step = torch.exp2((e - self.mbits).float())
        q = torch.round(a / step).mul_(step).clamp_(max=self.max_value)
        return torch.copysign(q, v)

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
