"""mtn.convert / mtn.search / mtn.export on a residual CNN."""

from __future__ import annotations

import copy

import pytest
import torch

import modeloptim.torch.nas as mtn
import modeloptim.torch.opt as mto
from modeloptim.torch.prune.elastic import ElasticSlice
from modeloptim.torch.utils.profile import count_flops

from ..prune.models import ResCNN, randomize_bn

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(ResCNN())


def test_convert_search_export_round_trip(tmp_path) -> None:
    model = _model()
    fresh = copy.deepcopy(model)
    ref = model(X)
    f0 = count_flops(model, X)
    model = mtn.convert(
        model,
        [("autonas", {"ratios": [0.25, 0.5, 1.0], "group_ratios": {"head*": [1.0]}})],
        dummy_input=X,
    )
    assert isinstance(model.stem[0], ElasticSlice)
    torch.testing.assert_close(model(X), ref, rtol=0, atol=0)  # full subnet == original
    opts = mtn.choices(model)
    assert opts["stem.0.out_channels"] == [4, 8, 16]
    assert opts["head.out_channels"] == [32]
    seen: list[int] = []

    def score(m: torch.nn.Module) -> float:
        seen.append(count_flops(m, X))
        return float(count_flops(m, X))  # prefers the largest subnet that fits

    model, state = mtn.search(
        model, {"flops": "60%"}, X, {"score_func": score, "num_candidates": 6}
    )
    assert all(f <= 0.6 * f0 for f in seen)
    best = state["best"]
    assert best["score"] == max(seen)
    for name, size in best["subnet"].items():
        assert size in opts[name]
    active_out = model(X)
    model = mtn.export(model)
    assert not any(isinstance(m, ElasticSlice) for m in model.modules())
    assert count_flops(model, X) == best["cost"]["flops"]
    torch.testing.assert_close(model(X), active_out, rtol=0, atol=1e-6)
    mto.save(model, tmp_path / "m.pt")
    restored = mto.restore(fresh, tmp_path / "m.pt")
    torch.testing.assert_close(restored(X), model(X), rtol=0, atol=0)


def test_save_restore_of_converted_model_keeps_active_subnet(tmp_path) -> None:
    model = mtn.convert(_model(), "autonas", dummy_input=X)
    model, _ = mtn.search(model, {"params": "50%"}, X, {"num_candidates": 3})
    out = model(X)
    mto.save(model, tmp_path / "m.pt")
    restored = mto.restore(_model(), tmp_path / "m.pt")
    torch.testing.assert_close(restored(X), out, rtol=0, atol=0)


def test_errors() -> None:
    with pytest.raises(ValueError, match="dummy_input"):
        mtn.convert(_model(), "autonas")
    with pytest.raises(ValueError, match="not converted to a search space"):
        mtn.search(_model(), {"flops": "50%"}, X)
    model = mtn.convert(_model(), [("autonas", {"ratios": [0.5, 1.0]})], dummy_input=X)
    with pytest.raises(ValueError, match="cannot be met"):
        mtn.search(model, {"flops": "1%"}, X)
