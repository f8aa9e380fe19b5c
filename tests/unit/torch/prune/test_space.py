"""Search space from the dependency analysis: plans, elastic forward, plain-data round trip."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from modeloptim.torch.opt.mode import check_plain_data
from modeloptim.torch.prune.builders import build_space, space_from_analysis
from modeloptim.torch.prune.elastic import activate, convert_elastic, export_elastic
from modeloptim.torch.prune.space import SearchSpace
from modeloptim.torch.trace import analyze, prune_group

from .models import Fixed, GroupedNet, ResCNN, TinyTransformer, randomize_bn

CASES = [
    (lambda: randomize_bn(ResCNN()), lambda: torch.randn(2, 3, 8, 8)),
    (lambda: TinyTransformer().eval(), lambda: torch.randn(2, 5, 6)),
    (lambda: GroupedNet().eval(), lambda: torch.randn(2, 3, 8, 8)),
]


def _random_keep(space: SearchSpace, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        gr.name: torch.randperm(gr.size, generator=g)[: max(1, gr.size // 2)].sort().values
        for gr in space.groups
    }


@pytest.mark.parametrize(("make", "inp"), CASES)
def test_plan_matches_sequential_prune_group(make, inp) -> None:
    """Second algorithm: the trace's own prune_group applied group by group."""
    torch.manual_seed(0)
    model, x = make(), inp()
    space = space_from_analysis(model, analyze(model, x))
    assert space.groups
    keep = _random_keep(space, 1)
    a = space.plan(space.keep_vector(keep)).apply(copy.deepcopy(model))
    b = copy.deepcopy(model)
    groups = analyze(b, x).searchable_groups
    assert [g.size for g in groups] == [g.size for g in space.groups]
    for g, sg in zip(groups, space.groups, strict=True):  # same order, names may repeat
        prune_group(b, g, keep[sg.name])
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.allclose(a(x), b(x), atol=1e-6)
    assert sum(p.numel() for p in a.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("make", "inp"), CASES)
def test_elastic_forward_equals_physical(make, inp) -> None:
    torch.manual_seed(0)
    model, x = make(), inp()
    space = space_from_analysis(model, analyze(model, x))
    ref_full = model(x)
    keep = space.keep_vector(_random_keep(space, 2))
    physical = space.plan(keep).apply(copy.deepcopy(model))
    convert_elastic(model, space)
    activate(model, keep)
    torch.testing.assert_close(model(x), physical(x), rtol=0, atol=1e-6)
    activate(model, torch.ones(space.num_channels, dtype=torch.bool))
    torch.testing.assert_close(model(x), ref_full, rtol=0, atol=0)
    export_elastic(model)
    assert type(model.fc if hasattr(model, "fc") else model.out) is nn.Linear
    torch.testing.assert_close(model(x), ref_full, rtol=0, atol=0)


def test_grouped_conv_keeps_whole_groups_consistent() -> None:
    model, x = GroupedNet().eval(), torch.randn(1, 3, 8, 8)
    space = space_from_analysis(model, analyze(model, x))
    sizes = sorted(g.size for g in space.groups)
    assert sizes == [2, 3, 4]  # groups of gconv (4) x per-group in (3) / out (2) channels
    g4 = next(g for g in space.groups if g.size == 4)
    out = space.plan(space.keep_vector({g4.name: [0, 3]})).apply(copy.deepcopy(model))
    assert out.g.groups == 2
    assert out.g.weight.shape == (4, 3, 3, 3)
    assert out.gn.num_groups == 2
    assert out.gn.weight.shape == (4,)
    assert out.dw.groups == 6
    assert out.expand.weight.shape[0] == 6
    out(x)


def test_plain_data_round_trip() -> None:
    model, x = randomize_bn(ResCNN()), torch.randn(1, 3, 8, 8)
    space = space_from_analysis(model, analyze(model, x))
    data = space.to_data()
    check_plain_data(data)
    back = SearchSpace.from_data(data)
    keep = space.keep_vector(_random_keep(space, 3))
    a = space.plan(keep).apply(copy.deepcopy(model))
    b = back.plan(keep).apply(copy.deepcopy(model))
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    check_plain_data(space.plan(keep).to_data())


def test_no_searchable_groups_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no searchable channel groups"):
        build_space(Fixed(), torch.randn(2, 4))
