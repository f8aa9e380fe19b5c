"""Independent references for the format tests (written from DESIGN §2, not from the code).

Blocks are visited with explicit slicing loops (no reshape/permute tricks), element grids
are enumerated from the bit layout and rounded by nearest-neighbour search with ties to the
even code, and MX exponents come from math.log2 on Python floats.
"""

from __future__ import annotations

import itertools
import math

import torch

TINY = 2.0**-24


def div(a, b):
    """IEEE float32 division (``float / tensor`` in torch is reciprocal-multiply)."""
    a = torch.as_tensor(a, dtype=torch.float32)
    b = torch.as_tensor(b, dtype=torch.float32)
    return torch.div(a, b)


def make_inputs(shape, dtype, seed=0, kind="mixed"):
    """Random tensor with outliers, exact zeros and a wide per-row dynamic range."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    if kind == "mixed" and x.numel() > 4:
        flat = x.view(-1)
        idx = torch.randperm(flat.numel(), generator=g)
        flat[idx[: max(1, flat.numel() // 10)]] = 0.0
        flat[idx[-2:]] *= 30.0  # outliers
        if x.ndim >= 2:  # rows spanning several orders of magnitude
            rows = torch.logspace(-3, 2, x.shape[0])
            x = x * rows.view(-1, *([1] * (x.ndim - 1)))
    return x.to(dtype)


SHAPES = [(7,), (4, 33), (3, 5, 70), (2, 3, 16, 8)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


# ---------------------------------------------------------------- integer / fp8
def int_bounds(bits, unsigned, narrow):
    if unsigned:
        return 0.0, float(2**bits - 1), float(2**bits - 1)
    bound = float(2 ** (bits - 1) - 1)
    return (-bound if narrow else -bound - 1), bound, bound


def ref_int(x32, amax, bits, unsigned=False, narrow=True):
    """float32, DESIGN op order: scale = bound/amax; round; clamp; divide."""
    lo, hi, bound = int_bounds(bits, unsigned, narrow)
    amax = amax.float()
    tiny = amax <= TINY
    scale = torch.where(tiny, torch.ones_like(amax), div(bound, amax))
    out = torch.clamp(torch.round(x32 * scale), lo, hi) / scale
    return torch.where(tiny, torch.zeros_like(out), out)


def ref_int_f64(x, amax, bits, unsigned=False, narrow=True):
    lo, hi, bound = int_bounds(bits, unsigned, narrow)
    x, amax = x.double(), amax.double()
    tiny = amax <= TINY
    step = torch.where(tiny, torch.ones_like(amax), amax / bound)
    out = torch.clamp(torch.round(x / step), lo, hi) * step
    return torch.where(tiny, torch.zeros_like(out), out), step / 2


FP8 = {4: (torch.float8_e4m3fn, 448.0), 5: (torch.float8_e5m2, 57344.0)}


def ref_fp8(x32, amax, ebits):
    dt, fmax = FP8[ebits]
    amax = amax.float()
    tiny = amax <= TINY
    scale = torch.where(tiny, torch.ones_like(amax), div(fmax, amax))
    y = torch.clamp(x32 * scale, -fmax, fmax).to(dt).float()
    out = y * div(1.0, scale)
    return torch.where(tiny, torch.zeros_like(out), out)


def minifloat_grid(ebits, mbits, bias=None, has_inf_nan=False):
    """All non-negative values ordered by code (enumerated from the bit layout)."""
    bias = 2 ** (ebits - 1) - 1 if bias is None else bias
    vals = []
    for e in range(2**ebits):
        for m in range(2**mbits):
            if e == 0:
                vals.append(m / 2**mbits * 2.0 ** (1 - bias))
            else:
                vals.append((1 + m / 2**mbits) * 2.0 ** (e - bias))
    return vals


def ref_fp8_f64(x, amax, ebits):
    """float64 reference: scaled value rounded to the nearest FP8 grid point."""
    fmax = FP8[ebits][1]
    mb = 3 if ebits == 4 else 2
    grid = [v for v in minifloat_grid(ebits, mb) if v <= fmax]
    s = fmax / amax.double()
    y = round_to_grid(x.double() * s, grid)
    # half step of the local grid spacing (relative to the unscaled value)
    return y / s, None


def round_to_grid(v, grid, ties_even=True):
    """Nearest grid value of |v| (float64), ties to the even code, saturating; keeps sign."""
    g = torch.tensor(grid, dtype=torch.float64)
    a = v.double().abs().clamp(max=grid[-1]).reshape(-1, 1)
    d = (a - g).abs()
    best = d.min(dim=1, keepdim=True).values
    cand = d == best
    idx = torch.arange(len(grid)).expand_as(cand)
    # among tied candidates prefer the even code index
    score = torch.where(cand, idx + (idx % 2) * 1000 if ties_even else idx, 10**9)
    pick = score.argmin(dim=1)
    return (torch.sign(v.double()).reshape(-1) * g[pick]).reshape(v.shape)


# ---------------------------------------------------------------- blocks by slicing
def block_slices(shape, block_sizes):
    """Yield index tuples (slices) covering each block; the last block may be partial."""
    nd = len(shape)
    dims = {d % nd: b for d, b in block_sizes.items()}
    ranges = []
    for d in range(nd):
        if d in dims:
            b = dims[d]
            ranges.append([slice(i, min(i + b, shape[d])) for i in range(0, shape[d], b)])
        else:
            ranges.append([slice(i, i + 1) for i in range(shape[d])])
    yield from itertools.product(*ranges)


def blockwise(x, block_sizes, fn):
    """Apply ``fn(block) -> block`` to each block of ``x`` (a float tensor)."""
    out = torch.empty_like(x)
    for sl in block_slices(x.shape, block_sizes):
        out[sl] = fn(x[sl])
    return out


# ---------------------------------------------------------------- nvfp4 / mx
E2M1 = minifloat_grid(2, 1)


def ref_nvfp4_block(xb, scale_2):
    block_amax = xb.abs().max()
    s = block_amax / (6.0 * scale_2)
    if s.item() == 0:
        s = torch.tensor(1.0)
    s = s.clamp(2.0**-9, 448.0).to(torch.float8_e4m3fn).float()
    d = s * scale_2
    q = round_to_grid(xb / d, E2M1).float()
    return q * d


def ref_nvfp4(x32, global_amax, block=16):
    if global_amax.item() <= TINY:
        return torch.zeros_like(x32)
    scale_2 = div(global_amax.float(), 6.0 * 448.0)
    return blockwise(x32, {-1: block}, lambda b: ref_nvfp4_block(b, scale_2))


MX_ELEMS = {
    # name: (grid or None, max)
    "e4m3": (None, 448.0),
    "e5m2": (None, 57344.0),
    "e3m2": (minifloat_grid(3, 2), 28.0),
    "e2m3": (minifloat_grid(2, 3), 7.5),
    "e2m1": (E2M1, 6.0),
    "int8": ([k / 64 for k in range(128)], 127 / 64),
}


def mx_exponent(block_amax: float, elem_max: float) -> int:
    if block_amax == 0:
        return -127
    r = float(torch.tensor(block_amax, dtype=torch.float32) / torch.tensor(elem_max))
    e = math.ceil(math.log2(r))
    return max(-127, min(127, e))


def ref_mx_block(xb, elem):
    grid, emax = MX_ELEMS[elem]
    e = mx_exponent(float(xb.abs().max()), emax)
    p = 2.0**e
    y = xb / p
    if grid is None:
        dt = torch.float8_e4m3fn if elem == "e4m3" else torch.float8_e5m2
        q = y.clamp(-emax, emax).to(dt).float()
    else:
        q = round_to_grid(y, grid).float()
    return q * p


def ref_mx(x32, elem, block=32):
    return blockwise(x32, {-1: block}, lambda b: ref_mx_block(b, elem))
