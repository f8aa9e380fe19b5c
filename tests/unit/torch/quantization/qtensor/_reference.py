"""Independent float32 fake-quant references written from DESIGN §2 (op order included).

Divisions are correctly rounded (tensor / tensor): PyTorch computes ``float / tensor`` as a
reciprocal times the float, which can be one ulp off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def blocks(x, b):
    pad = (-x.shape[-1]) % b
    xp = F.pad(x.float(), (0, pad))
    return xp.reshape(*x.shape[:-1], -1, b), x.shape[-1]


def unblock(xb, n):
    return xb.flatten(-2)[..., :n]


def int_fq(x, amax, bound):
    x = x.float()
    amax = amax.float()
    tiny = amax <= 2**-24
    scale = torch.where(tiny, torch.ones_like(amax), torch.div(torch.tensor(bound), amax))
    out = torch.div(torch.round(x * scale).clamp(-bound, bound), scale)
    return torch.where(tiny, torch.zeros_like(out), out)


def fp8_fq(x, amax):
    x = x.float()
    amax = amax.float()
    tiny = amax <= 2**-24
    scale = torch.where(tiny, torch.ones_like(amax), torch.div(torch.tensor(448.0), amax))
    y = (x * scale).clamp(-448, 448).to(torch.float8_e4m3fn).float()
    out = y * torch.div(torch.tensor(1.0), scale)
    return torch.where(tiny, torch.zeros_like(out), out)


def e2m1_round(y):
    # brute force nearest with ties to even code, in float64
    grid = E2M1_GRID.double()
    a = y.double().abs().clamp(max=6.0)
    d = (a.unsqueeze(-1) - grid).abs()
    best = d.min(dim=-1, keepdim=True).values
    cand = d == best
    # prefer even code among ties
    idx = torch.arange(8)
    score = torch.where(cand, idx % 2, torch.full_like(idx, 100))
    code = score.argmin(dim=-1)
    return torch.copysign(grid[code], y.double()).float()


def nvfp4_fq(x, gamax):
    xb, n = blocks(x, 16)
    scale_2 = torch.div(gamax.float(), torch.tensor(6.0 * 448.0))
    s = xb.abs().amax(-1, keepdim=True) / (6.0 * scale_2)
    s = torch.where(s == 0, torch.ones_like(s), s).clamp(2**-9, 448)
    d = s.to(torch.float8_e4m3fn).float() * scale_2
    return unblock(e2m1_round(xb / d) * d, n)


def mx_fq(x, elem_max, cast):
    xb, n = blocks(x, 32)
    bamax = xb.abs().amax(-1, keepdim=True)
    r = torch.div(
        bamax, torch.tensor(float(elem_max))
    ).double()  # float32 quotient, as DESIGN/core compute it
    ks = torch.arange(-127, 128, dtype=torch.float64)
    first = torch.where((2.0**ks) >= r, ks, torch.full_like(ks, 1e9)).amin(-1, keepdim=True)
    e = torch.where(bamax == 0, torch.full_like(first, -127.0), first.clamp(max=127))
    p = (2.0**e).float()
    return unblock(cast(xb / p) * p, n)
