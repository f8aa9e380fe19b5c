"""mtp.prune end to end: budgets, search, checkpoint resume, save/restore, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

import modeloptim.torch.opt as mto
import modeloptim.torch.prune as mtp
from modeloptim.torch.opt.state import is_converted
from modeloptim.torch.utils.profile import count_flops, count_params

from .models import Fixed, ResCNN, randomize_bn

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
DATA = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(ResCNN())


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fastnas_flops_budget_and_round_trip(tmp_path) -> None:
    model = _model()
    fresh = copy.deepcopy(model)
    f0 = count_flops(model, X)
    calls = []

    def score(m: torch.nn.Module) -> float:
        calls.append(count_flops(m, X))
        with torch.no_grad():
            return -float(m(X).std())

    pruned, state = mtp.prune(
        model,
        [("fastnas", {"channel_divisor": 1})],
        {"flops": "50%"},
        X,
        {"score_func": score, "data_loader": DATA, "num_candidates": 4},
    )
    f1 = count_flops(pruned, X)
    assert 0.45 * f0 <= f1 <= 0.50 * f0  # within 5% (of the original) below the target
    assert len(calls) == 4
    assert all(c <= 0.5 * f0 for c in calls)  # every scored candidate met the budget
    assert state["best"]["score"] == max(c["score"] for c in state["candidates"])
    assert state["best"]["cost"]["flops"] == f1
    assert count_params(pruned) < count_params(fresh)
    assert all(
        type(m).__module__.startswith("torch.nn") for m in pruned.modules() if m is not pruned
    )  # plain layers after export
    path = tmp_path / "pruned.pt"
    mto.save(pruned, path)
    restored = mto.restore(copy.deepcopy(fresh), path)
    assert _same(restored, pruned)
    torch.testing.assert_close(restored(X), pruned(X), rtol=0, atol=0)
    # restore replays on a model with *other* weights too: shapes come from the plan
    other = mto.restore(ResCNN().eval(), path)
    assert [p.shape for p in other.parameters()] == [p.shape for p in pruned.parameters()]


def test_params_budget_without_score_uses_importance() -> None:
    model = _model()
    with torch.no_grad():  # make channel 5 of the stem clearly the least important
        model.stem[0].weight[5].zero_()
        model.stem[1].weight[5] = 0.0
        model.a[4].weight[5] = 0.0
        model.a[3].weight[5].zero_()
    p0 = count_params(model)
    pruned, state = mtp.prune(model, "fastnas", {"params": 0.7 * p0}, X)
    assert count_params(pruned) <= 0.7 * p0
    assert count_params(pruned) >= 0.6 * p0
    assert state["best"]["score"] is None
    stem = pruned.stem[0].weight
    assert stem.shape[0] < 16
    ref = _model().stem[0].weight
    kept = [i for i in range(16) if i != 5]
    # every kept filter is an original one, and the zeroed filter 5 went first
    assert any(torch.equal(stem[0], ref[i]) for i in kept)
    assert not any(torch.equal(row, torch.zeros_like(row)) for row in stem)


def test_bn_recalibration_matches_fresh_statistics() -> None:
    model = _model()
    seen = {}

    def score(m: torch.nn.Module) -> float:
        bn = m.stem[1]
        with torch.no_grad():
            feats = torch.cat([m.stem[0](d) for d in DATA])
        seen["mean"] = (bn.running_mean.clone(), feats.mean((0, 2, 3)))
        seen["var"] = (bn.running_var.clone(), feats.var((0, 2, 3), unbiased=True))
        return 0.0

    mtp.prune(
        model,
        "fastnas",
        {"flops": "60%"},
        X,
        {"score_func": score, "data_loader": DATA, "num_candidates": 1},
    )
    torch.testing.assert_close(*seen["mean"], rtol=1e-4, atol=1e-5)
    # cumulative average of per-batch unbiased variances (3 equal batches)
    assert torch.allclose(seen["var"][0], seen["var"][1], rtol=0.1)


def test_checkpoint_resumes(tmp_path) -> None:
    ckpt = str(tmp_path / "search.pt")
    n_calls = []

    def score(m: torch.nn.Module) -> float:
        n_calls.append(1)
        return float(sum(p.detach().sum() for p in m.parameters()))

    cfg = {"score_func": score, "num_candidates": 3, "checkpoint": ckpt}
    _, s1 = mtp.prune(_model(), "fastnas", {"flops": "60%"}, X, cfg)
    assert len(n_calls) == 3
    _, s2 = mtp.prune(_model(), "fastnas", {"flops": "60%"}, X, {**cfg, "num_candidates": 5})
    assert len(n_calls) == 5  # only the two new candidates were scored
    first = {tuple(c["mult"]) for c in s1["candidates"]}
    assert first <= {tuple(c["mult"]) for c in s2["candidates"]}


def test_impossible_constraint_leaves_model_unchanged() -> None:
    model = _model()
    before = copy.deepcopy(model)
    with pytest.raises(ValueError, match="cannot be met; the smallest sub-net"):
        mtp.prune(model, "fastnas", {"flops": 10}, X)
    assert _same(model, before)
    assert not is_converted(model)


def test_no_searchable_symbols() -> None:
    model = Fixed()
    before = copy.deepcopy(model)
    with pytest.raises(ValueError, match="no searchable channel groups"):
        mtp.prune(model, "fastnas", {"flops": "50%"}, torch.randn(2, 4))
    assert _same(model, before)


def test_score_function_that_raises() -> None:
    model = _model()
    before = copy.deepcopy(model)

    def bad(m: torch.nn.Module) -> float:
        raise KeyError("val_loader")

    with pytest.raises(mtp.ScoreFunctionError, match="score_func raised KeyError"):
        mtp.prune(model, "fastnas", {"flops": "50%"}, X, {"score_func": bad})
    assert _same(model, before)
    assert not is_converted(model)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "slimnas"}, "mode: expected one of"),
        ({"constraints": {"latency": 3}}, "unknown key 'latency'"),
        ({"constraints": {"flops": "abc%"}}, "cannot read"),
        ({"constraints": {"flops": -1}}, "must be positive"),
        ({"config": {"score_fn": 1}}, "unknown keys"),
        ({"mode": [("fastnas", {"channel_divisor": 0})]}, "channel_divisor"),
        ({"mode": "gradnas"}, "needs 'data_loader' and 'loss_func"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    model = _model()
    before = copy.deepcopy(model)
    args = {"mode": "fastnas", "constraints": {"flops": "50%"}, "config": None} | kwargs
    with pytest.raises(ValueError, match=match):
        mtp.prune(model, args["mode"], args["constraints"], X, args["config"])
    assert _same(model, before)


def test_returned_model_has_recalibrated_batchnorm() -> None:
    pruned, _ = mtp.prune(_model(), "fastnas", {"flops": "60%"}, X, {"data_loader": DATA})
    with torch.no_grad():
        feats = torch.cat([pruned.stem[0](d) for d in DATA])
    torch.testing.assert_close(
        pruned.stem[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-4, atol=1e-5
    )
