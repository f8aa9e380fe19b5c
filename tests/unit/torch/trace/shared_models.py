"""Small models for the shared-input finder tests (random weights, unusual names)."""

from __future__ import annotations

import torch
from torch import nn


class OddNorm(nn.Module):
    """An RMS norm that is no library's class (traced through, not a leaf)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1 + 0.2 * torch.randn(d))

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class Unusual(nn.Module):
    """Fan-out through a dict and a Python branch, names like ``alpha`` and ``zz.0``.

    - ``alpha``, ``zz.1``, ``heads.u`` read ``zz.0``'s output (three layers, one via a dict);
    - ``heads.w`` reads a row slice of the same tensor (seen through, not foldable);
    - ``tail`` reads ``side``'s output, which the residual add also reads (not exclusive);
    - ``omega`` reads a product made in the model's own forward (no producer).
    """

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.zz = nn.ModuleList([OddNorm(d), nn.Linear(d, 24)])
        self.alpha = nn.Linear(d, 24)
        self.heads = nn.ModuleDict({"u": nn.Linear(d, 8, bias=False), "w": nn.Linear(d, 8)})
        self.omega = nn.Linear(24, d)
        self.side = nn.LayerNorm(d)
        self.tail = nn.Linear(d, d)
        self.mode = "gated"

    def forward(self, x):
        h = self.zz[0](x)
        outs = {k: layer(h) for k, layer in self.heads.items() if k == "u"}
        y = self.alpha(h) * torch.sigmoid(self.zz[1](h)) if self.mode == "gated" else self.alpha(h)
        w = self.heads["w"](h[:, :1])
        x = x + self.omega(y) + outs["u"].sum(-1, keepdim=True) + w.mean()
        s = self.side(x)
        return self.tail(s) + s


class Moody(nn.Module):
    """Branches on tensor data (untraceable): q/k read its own input, r reads its norm."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.inner = nn.LayerNorm(d)
        self.r = nn.Linear(d, d)
        self.s = nn.Linear(d, d)

    def forward(self, x):
        if x.sum() > 1e9:  # data-dependent: torch.fx cannot trace this module
            x = x * 2
        g = self.inner(x)
        return self.q(x) * self.k(x) + self.r(g) + self.s(g)


class WithMoody(nn.Module):
    """A traceable model whose block ``blk`` fails to trace."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.pre = nn.LayerNorm(d)
        self.blk = Moody(d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        return self.out(self.blk(self.pre(x)))


class TinyMoE(nn.Module):
    """Top-1 MoE: the router reads ``h``; expert ``i`` reads the rows ``h[idx_i]``."""

    def __init__(self, d: int = 16, experts: int = 3) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.router = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList([nn.Linear(d, d) for _ in range(experts)])

    def forward(self, x):
        h = self.ln(x).view(-1, x.shape[-1])
        top = self.router(h).argmax(-1)
        out = torch.zeros_like(h)
        for i, expert in enumerate(self.experts):
            idx = torch.where(top == i)[0]
            out = out.index_add(0, idx, expert(h[idx]))
        return out.view(x.shape)
