"""prune_group numerics: the pruned model equals the original with those channels removed."""

import copy

import pytest
import torch
from torch import nn

from modeloptim.torch.trace import analyze, prune_group

from .hand_models import InceptionLike, SEBlockNet, SharedTiedNet, SwiGLUNet


def test_mlp_hidden_units_removed_exactly_float64():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    res = analyze(model, x)
    (g,) = res.searchable_groups
    assert g.size == 7
    keep = [0, 2, 3, 6]
    w1, b1 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    w2, b2 = model[2].weight.detach().clone(), model[2].bias.detach().clone()
    prune_group(model, g, keep)
    ref = torch.relu(x @ w1[keep].T + b1[keep]) @ w2[:, keep].T + b2
    torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-12)
    assert (model[0].out_features, model[2].in_features) == (4, 4)


def test_concat_branch_pruning_equals_zeroed_consumer_columns():
    model = InceptionLike().eval()
    x = torch.randn(2, 3, 8, 8)
    res = analyze(model, x)
    g = next(g for g in res.searchable_groups if g.name == "b2.2.out_channels")
    ref_model = copy.deepcopy(model)
    with torch.no_grad():  # b2.2's channels 1, 3, 5 sit at offsets 4 + (1, 3, 5) of mix's input
        ref_model.mix.weight[:, [5, 7, 9]] = 0.0
    prune_group(model, g, [0, 2, 4])
    assert model.mix.weight.shape == (8, 9, 1, 1)
    assert model.b2[2].out_channels == 3
    torch.testing.assert_close(model(x), ref_model(x), rtol=1e-5, atol=1e-6)


def test_swiglu_halves_pruned_together():
    model = SwiGLUNet().eval()
    x = torch.randn(2, 5, 16)
    res = analyze(model, x)
    g = next(g for g in res.searchable_groups if g.size == 24)
    keep = list(range(0, 24, 3))
    w12 = model.w12.weight.detach().clone()
    prune_group(model, g, keep)
    expected = torch.cat([w12[keep], w12[[24 + k for k in keep]]])
    torch.testing.assert_close(model.w12.weight, expected, rtol=0, atol=0)
    assert model.w12.out_features == 16
    assert model.w3.in_features == 8
    assert model(x).shape == (2, 5, 4)


def test_se_gate_and_batchless_groups_prune():
    model = SEBlockNet().eval()
    x = torch.randn(2, 3, 8, 8)
    res = analyze(model, x)
    g = next(g for g in res.searchable_groups if g.size == 16)
    assert set(g.layers) == {"conv", "fc1", "fc2", "out"}
    prune_group(model, g, list(range(8)))
    assert model.fc2.out_channels == 8
    assert model.out.in_channels == 8
    assert model(x).shape == (2, 5, 8, 8)


def test_tied_weights_stay_tied_after_pruning():
    model = SharedTiedNet().eval()
    ids = torch.randint(0, 20, (2, 5))
    res = analyze(model, ids)
    g = next(g for g in res.searchable_groups if g.size == 12)
    prune_group(model, g, list(range(6)))
    assert model.lm_head.weight is model.emb.weight
    assert model.emb.weight.shape == (20, 6)
    assert model.shared.weight.shape == (6, 6)
    assert model(ids).shape == (2, 5, 20)


def test_bad_keep_idx_and_frozen_group_leave_model_untouched():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    res = analyze(model, torch.randn(4, 5))
    (g,) = res.searchable_groups
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for bad, msg in [([], "at least one"), ([0, 7], r"\[0, 7\)"), ([1, 1], "unique")]:
        with pytest.raises(ValueError, match=f"keep_idx: .*{msg}"):
            prune_group(model, g, bad)
    frozen = res.frozen_groups[0]
    with pytest.raises(ValueError, match=r"group: .* is frozen"):
        prune_group(model, frozen, [0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
