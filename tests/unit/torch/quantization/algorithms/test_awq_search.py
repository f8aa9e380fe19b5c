"""AWQ scale/clip searches vs brute-force grids computed independently in float64."""

from __future__ import annotations

import torch

from modeloptim.torch.quantization.algorithms.awq_search import (
    awq_clip_search,
    awq_lite_search,
    default_alpha_grid,
    default_clip_grid,
)


def _int4_block_qdq(w: torch.Tensor, bs: int = 8, amax: torch.Tensor | None = None):
    rows, cols = w.shape
    wb = w.double().reshape(rows, cols // bs, bs)
    a = wb.abs().amax(dim=-1, keepdim=True) if amax is None else amax.double()
    scale = 7.0 / a
    return (torch.round(wb * scale).clamp(-7, 7) / scale).reshape(rows, cols)


def _data(seed=0, t=64, cols=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, cols, generator=g)
    x[:, 3] *= 20  # activation outlier channels: AWQ's case
    x[:, 17] *= 8
    ws = [torch.randn(12, cols, generator=g), torch.randn(5, cols, generator=g)]
    return x, ws


def test_awq_lite_picks_brute_force_alpha():
    x, ws = _data()
    x_mean = x.abs().mean(0)
    res = awq_lite_search(
        x,
        x_mean,
        ws,
        [lambda w: _int4_block_qdq(w).float()] * 2,
        block_size=8,
        include_identity=False,
    )
    # brute force in float64, written independently of the module
    xd = x.double()
    wcat = torch.cat(ws).double()
    wn = wcat.abs().reshape(17, 4, 8) / wcat.abs().reshape(17, 4, 8).amax(-1, keepdim=True)
    w_mean = wn.reshape(17, 32).mean(0)
    losses = []
    for a in default_alpha_grid():
        s = x_mean.double() ** a / (w_mean ** (1 - a) + 1e-12)
        s = s.clamp_min(1e-4)
        s = s / (s.max() * s.min()).sqrt()
        loss = sum(
            ((xd / s) @ _int4_block_qdq(w.double() * s).T - xd @ w.double().T).pow(2).sum()
            for w in ws
        )
        losses.append(float(loss))
    best = min(range(len(losses)), key=losses.__getitem__)
    assert res.alpha == default_alpha_grid()[best]
    torch.testing.assert_close(torch.tensor(res.losses), torch.tensor(losses), rtol=1e-3, atol=0)
    assert res.losses[best] < res.losses[0]  # scaling helps on outlier channels
    s_best = res.scale
    assert s_best[3] > s_best.median()  # outlier channel gets the largest protection


def test_awq_lite_includes_activation_quantization():
    x, ws = _data(seed=1)
    x_mean = x.abs().mean(0)
    calls = []

    def qdq_act(xs, s):
        calls.append(s)
        return torch.round(xs * 4) / 4

    res = awq_lite_search(
        x, x_mean, ws, [lambda w: _int4_block_qdq(w).float()] * 2, qdq_act, 8, [0.0, 0.5]
    )
    assert len(calls) == 3  # s = 1, then the two alphas
    xd = x.double()
    s = res.scale.double()
    expect = sum(
        ((torch.round(xd / s * 4) / 4) @ _int4_block_qdq(w.double() * s).T - xd @ w.double().T)
        .pow(2)
        .sum()
        for w in ws
    )
    assert abs(min(res.losses) - float(expect)) <= 1e-3 * float(expect)


def test_awq_clip_matches_per_block_brute_force():
    x, ws = _data(seed=2, cols=32)
    w = ws[0]
    clipped, ratio = awq_clip_search(x, w, lambda v: _int4_block_qdq(v).float(), 8)
    grid = sorted(set([1.0, *default_clip_grid()]), reverse=True)
    xd, wd = x.double(), w.double()
    amax = wd.reshape(12, 4, 8).abs().amax(-1)
    for row in range(12):
        for blk in range(4):
            cols = slice(blk * 8, blk * 8 + 8)
            best_r, best_l = None, float("inf")
            for r in grid:
                a = torch.full((1, 1, 1), float(r * amax[row, blk]))
                q = _int4_block_qdq(wd[row : row + 1, cols], amax=a)
                loss = float((xd[:, cols] @ (wd[row, cols] - q[0])).pow(2).sum())
                if loss < best_l * (1 - 1e-9):
                    best_r, best_l = r, loss
            assert abs(float(ratio[row, blk]) - best_r) < 1e-6, (row, blk)
    # the clipped weight is the original clamped to ratio * block amax
    lim = (ratio * amax.float()).repeat_interleave(8, dim=1)
    torch.testing.assert_close(clipped, torch.maximum(torch.minimum(w, lim), -lim))
    # and it lowers the output error vs no clipping
    err = lambda q: float((x @ (w - q).T).pow(2).sum())  # noqa: E731
    assert err(_int4_block_qdq(clipped).float()) < err(_int4_block_qdq(w).float())


def test_awq_clip_handles_width_not_multiple_of_block():
    x, ws = _data(seed=3, cols=30)
    w = ws[1]

    def qdq(v):
        return torch.round(v * 2) / 2

    clipped, ratio = awq_clip_search(x, w, qdq, 8)
    assert clipped.shape == w.shape
    assert ratio.shape == (5, 4)


def test_awq_lite_identity_candidate_is_plain_rounding():
    x, ws = _data(seed=4)
    res = awq_lite_search(
        x, x.abs().mean(0), ws, [lambda w: _int4_block_qdq(w).float()] * 2, None, 8
    )
    rtn = sum(float((x.double() @ (w.double() - _int4_block_qdq(w)).T).pow(2).sum()) for w in ws)
    assert len(res.losses) == len(default_alpha_grid()) + 1
    assert abs(res.losses[0] - rtn) <= 1e-4 * rtn
    assert min(res.losses) <= res.losses[0]
