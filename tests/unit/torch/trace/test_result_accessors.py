"""Public position maps of `ChannelGroup` (what pruning search spaces are built from)."""

import copy

import pytest
import torch
from torch import nn

from modeloptim.torch.trace import ChannelGroup, analyze, prune_group

from .hand_models import HeadsAttention, InceptionLike, SwiGLUNet


class CatNet(nn.Module):
    """``c(relu(cat(a(x), b(x))))``: a's 3 channels sit at c's inputs 0-2, b's 2 at 3-4."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 2), nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(torch.cat([self.a(x), self.b(x)], -1)))


def _group(model: nn.Module, x: torch.Tensor, name: str) -> ChannelGroup:
    return next(g for g in analyze(model, x).groups if g.name == name)


def test_concat_positions_hand_computed():
    g = _group(CatNet(), torch.randn(2, 4), "b.out_features")
    got = {(t, d): idx.tolist() for t, d, idx in g.member_channel_index()}
    assert got == {
        ("b.weight", 0): [0, 1],
        ("b.bias", 0): [0, 1],
        ("c.weight", 1): [-1, -1, -1, 0, 1],
    }
    assert [(m.tensor, m.dim) for m in g.members] == [
        (t, d) for t, d, _ in g.member_channel_index()
    ]
    attrs = {(owner, attr): spec for owner, attr, spec in g.size_attrs}
    assert set(attrs) == {("b", "out_features"), ("c", "in_features")}
    assert g.symbol_channel_index(attrs[("b", "out_features")]).tolist() == [0, 1]
    assert g.symbol_channel_index(attrs[("c", "in_features")]).tolist() == [-1, -1, -1, 0, 1]


@pytest.mark.parametrize(
    ("factory", "shape"),
    [(InceptionLike, (2, 3, 8, 8)), (SwiGLUNet, (2, 5, 16)), (HeadsAttention, (2, 5, 16))],
)
def test_positions_agree_with_prune_group(factory, shape):
    # Independent reference: prune_group keeps exactly the positions whose channel is kept.
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(*shape)
    groups = analyze(model, x).searchable_groups
    assert groups
    for g in groups:
        keep = list(range(0, g.size, 2))
        pruned = prune_group(copy.deepcopy(model), g, keep, update_analysis=False)
        params = dict(model.named_parameters())
        for tensor, dim, idx in g.member_channel_index():
            mask = (idx < 0) | torch.isin(idx, torch.tensor(keep))
            want = params[tensor].detach().index_select(dim, mask.nonzero()[:, 0])
            got = dict(pruned.named_parameters())[tensor]
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_not_from_analysis_is_a_clear_error():
    g = ChannelGroup("manual", 4, [], True)
    with pytest.raises(ValueError, match="group: 'manual' was not produced by"):
        g.member_channel_index()
    other = _group(CatNet(), torch.randn(2, 4), "a.out_features")
    spec = next(
        s
        for o, a, s in _group(CatNet(), torch.randn(2, 4), "a.out_features").size_attrs
        if a == "out_features"
    )
    with pytest.raises(ValueError, match=r"symbol: .* not a symbol of this group's analysis"):
        other.symbol_channel_index(spec)
