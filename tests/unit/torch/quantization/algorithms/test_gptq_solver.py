"""GPTQ solver vs a float64 straightforward OBS/GPTQ implementation."""

from __future__ import annotations

import pytest
import torch

from modeloptim.torch.quantization.algorithms.gptq_solver import (
    HessianAccumulator,
    gptq_quantize,
    prepare_inverse_hessian,
)


class _IntRule:
    """4-bit symmetric rounding with a per-row amax fixed per group (float32 in the solver)."""

    def __init__(self, group_size: int, amax: torch.Tensor | None = None) -> None:
        self.group_size = group_size
        self.amax = amax

    def start_group(self, w_group, index):
        if self.group_size:
            self.amax = w_group.abs().amax(dim=1)

    def quantize(self, col):
        scale = 7.0 / self.amax.to(col.dtype)
        return torch.round(col * scale).clamp(-7, 7) / scale


def _reference(w, h, group_size, percdamp, fixed_amax=None, perm=None):
    """Float64 GPTQ with the inverse of the remaining Hessian recomputed at every step."""
    w = w.double().clone()
    h = h.double().clone()
    h += percdamp * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    n = w.shape[1]
    order = list(range(n)) if perm is None else perm.tolist()
    q = torch.zeros_like(w)
    amax = fixed_amax.double() if fixed_amax is not None else None
    started = set()
    for step, i in enumerate(order):
        if group_size and i // group_size not in started:
            g = i // group_size
            started.add(g)
            amax = w[:, g * group_size : (g + 1) * group_size].abs().amax(dim=1)
        rest = order[step:]
        hinv = torch.linalg.inv(h[rest][:, rest])
        scale = 7.0 / amax
        q[:, i] = torch.round(w[:, i] * scale).clamp(-7, 7) / scale
        err = (w[:, i] - q[:, i]) / hinv[0, 0]
        w[:, rest] -= err.unsqueeze(1) * hinv[0].unsqueeze(0)
    return q


def _problem(rows=6, cols=32, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cols, generator=g) * torch.linspace(0.2, 3.0, cols)
    x[:, 5] += 2 * x[:, 3]  # correlated inputs make the error feedback matter
    w = torch.randn(rows, cols, generator=g)
    acc = HessianAccumulator(cols)
    acc.add(x[: n // 2])
    acc.add(x[n // 2 :].reshape(2, -1, cols))
    return w, x, acc.hessian


def test_hessian_accumulator_matches_definition():
    _w, x, h = _problem()
    torch.testing.assert_close(h, (2 * x.double().T @ x.double() / x.shape[0]).float())


@pytest.mark.parametrize(("group_size", "block_size"), [(8, 16), (16, 16), (8, 8), (0, 12)])
def test_gptq_matches_float64_reference(group_size, block_size):
    w, _x, h = _problem()
    fixed = w.abs().amax(dim=1) if group_size == 0 else None
    got = gptq_quantize(w, h, _IntRule(group_size, fixed), block_size=block_size, percdamp=0.01)
    ref = _reference(w, h, group_size, 0.01, fixed)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def test_gptq_act_order_per_channel_matches_reference():
    w, _x, h = _problem(seed=1)
    fixed = w.abs().amax(dim=1)
    got = gptq_quantize(w, h, _IntRule(0, fixed), block_size=8, act_order=True)
    perm = torch.argsort(torch.diagonal(h), descending=True)
    ref = _reference(w, h, 0, 0.01, fixed, perm=perm)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_layer_output(act_order):
    w, x, _ = _problem(rows=16, cols=64, n=400, seed=2)
    g = torch.Generator().manual_seed(3)
    x = x @ (torch.eye(64) + 0.3 * torch.randn(64, 64, generator=g))  # correlated features
    h = 2 * x.T @ x / x.shape[0]
    rule = _IntRule(16)
    got = gptq_quantize(w, h, rule, block_size=32, act_order=act_order)
    rtn = torch.cat([_rtn_group(w[:, i : i + 16]) for i in range(0, 64, 16)], dim=1)
    err_gptq = ((x @ (w - got).T) ** 2).mean()
    err_rtn = ((x @ (w - rtn).T) ** 2).mean()
    assert err_gptq < 0.7 * err_rtn


def _rtn_group(wg):
    scale = 7.0 / wg.abs().amax(dim=1, keepdim=True)
    return torch.round(wg * scale).clamp(-7, 7) / scale


def test_identity_hessian_gives_rtn():
    w, _, _ = _problem(cols=32)
    got = gptq_quantize(w, torch.eye(32), _IntRule(8), block_size=16)
    rtn = torch.cat([_rtn_group(w[:, i : i + 8]) for i in range(0, 32, 8)], dim=1)
    torch.testing.assert_close(got, rtn)


def test_dead_inputs_are_zeroed_and_width_not_multiple_of_group():
    w, x, h = _problem(cols=30)
    x[:, 7] = 0
    h = 2 * x.T @ x / x.shape[0]
    got = gptq_quantize(w, h, _IntRule(8), block_size=16)
    assert got.shape == w.shape
    assert torch.all(got[:, 7] == 0)
    assert torch.isfinite(got).all()


def test_rank_deficient_hessian_escalates_damping_or_errors():
    h = torch.zeros(4, 4)
    h[0, 0] = 1.0
    u = prepare_inverse_hessian(h + torch.eye(4) * 0, percdamp=0.01)
    assert torch.isfinite(u).all()
    with pytest.raises(ValueError, match="percdamp"):
        prepare_inverse_hessian(torch.eye(3), percdamp=0)
    with pytest.raises(RuntimeError, match="no calibration input"):
        _ = HessianAccumulator(3).hessian
    with pytest.raises(ValueError, match="hessian"):
        gptq_quantize(torch.randn(2, 3), torch.eye(4), _IntRule(0, torch.ones(2)))
