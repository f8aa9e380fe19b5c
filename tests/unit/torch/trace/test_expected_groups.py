"""Hand-written expected groups for small models (independent of the analyzer's internals)."""

import pytest
import torch
from torch import nn

from modeloptim.torch.trace import analyze, dependency_groups, prune_group

from .hand_models import HAND_MODELS
from .invariant import check_prune_each


def _groups(name):
    cls, make_x = HAND_MODELS[name]
    return {(g.size, frozenset(g.layers)) for g in dependency_groups(cls().eval(), make_x())}


def test_resnet_expected_groups():
    assert _groups("resnet") == {
        # stem + stage-1 residual stream (identity shortcuts) + stage-2 entry convs
        (
            8,
            frozenset(
                {
                    "stem.0",
                    "stem.1",
                    "layer1.0.conv1",
                    "layer1.0.conv2",
                    "layer1.0.bn2",
                    "layer1.1.conv1",
                    "layer1.1.conv2",
                    "layer1.1.bn2",
                    "layer2.0.down.0",
                    "layer2.0.conv1",
                }
            ),
        ),
        (8, frozenset({"layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2"})),
        (8, frozenset({"layer1.1.conv1", "layer1.1.bn1", "layer1.1.conv2"})),
        (16, frozenset({"layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2"})),
        (16, frozenset({"layer2.1.conv1", "layer2.1.bn1", "layer2.1.conv2"})),
        # stage-2 residual stream: downsample shortcut, block outputs, classifier input
        (
            16,
            frozenset(
                {
                    "layer2.0.down.0",
                    "layer2.0.down.1",
                    "layer2.0.conv2",
                    "layer2.0.bn2",
                    "layer2.1.conv1",
                    "layer2.1.conv2",
                    "layer2.1.bn2",
                    "fc",
                }
            ),
        ),
    }


def test_densenet_expected_groups():
    assert _groups("densenet") == {
        (6, frozenset({"stem", "l1.0", "l1.2", "l2.0", "l2.2", "trans"})),
        (4, frozenset({"l1.2", "l2.0", "l2.2", "trans"})),
        (4, frozenset({"l2.2", "trans"})),
        (8, frozenset({"trans", "head"})),
    }


def test_grouped_conv_expected_groups():
    # 12 channels = 4 groups (of gconv) x 3 channels per group; dw keeps channel identity
    assert _groups("grouped") == {
        (4, frozenset({"expand", "dw", "gconv", "gn", "proj"})),
        (3, frozenset({"expand", "dw", "gconv"})),
        (2, frozenset({"gconv", "gn", "proj"})),
    }


def test_data_dependent_root_falls_back_without_crash():
    class AllDynamic(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    res = analyze(AllDynamic(), torch.randn(3))
    assert res.groups == []
    (failed,) = list(res.gc.named_failed())
    assert failed[0] == ""
    assert "control flow" in failed[2]


def test_prelu_shared_and_per_channel():
    m = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.PReLU(), nn.Conv2d(8, 4, 1), nn.PReLU(4), nn.Conv2d(4, 2, 1)
    ).eval()
    groups = dependency_groups(m, torch.randn(1, 3, 4, 4))
    assert {(g.size, tuple(g.layers)) for g in groups} == {(8, ("0", "2")), (4, ("2", "3", "4"))}


class _RNNNet(nn.Module):
    def __init__(self, cls, bidirectional, layers):
        super().__init__()
        self.inp = nn.Linear(5, 6)
        self.rnn = cls(6, 8, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(16 if bidirectional else 8, 3)

    def forward(self, x):
        y, _ = self.rnn(self.inp(x))
        return self.out(y)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize(("bidirectional", "layers"), [(False, 1), (True, 2)])
def test_recurrent_hidden_size_group_prunes(cls, bidirectional, layers):
    model, x = _RNNNet(cls, bidirectional, layers).eval(), torch.randn(2, 4, 5)
    res = analyze(model, x)
    assert {(g.size, tuple(g.layers)) for g in res.searchable_groups} == {
        (6, ("inp", "rnn")),
        (8, ("rnn", "out")),
    }
    check_prune_each(model, x, res)
    hidden = next(g for g in res.searchable_groups if g.size == 8)
    prune_group(model, hidden, [0, 3, 5])
    assert model.rnn.hidden_size == 3
    assert model.out.in_features == (6 if bidirectional else 3)
    assert model(x).shape == (2, 4, 3)


class _Guarded(nn.Module):
    """Python branches on sizes: on the spatial size (fine) and on the channel count."""

    def __init__(self, check_channels):
        super().__init__()
        self.check_channels = check_channels
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        if y.shape[2] % 2 == 1:
            y = nn.functional.pad(y, (0, 1, 0, 1))
        if self.check_channels and y.size(1) != 8:
            raise ValueError("expected 8 channels")
        return self.b(y)


@pytest.mark.parametrize("check_channels", [False, True])
def test_shape_guards_freeze_only_the_dims_they_read(check_channels):
    res = analyze(_Guarded(check_channels).eval(), torch.randn(1, 3, 5, 5))
    g = next(g for g in res.groups if g.name == "a.out_channels")
    assert g.searchable is not check_channels
    if check_channels:
        assert any("Python control flow" in r for r in g.reasons)


class _EinsumAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(6, 8)
        self.k = nn.Linear(6, 8)
        self.v = nn.Linear(6, 5)
        self.o = nn.Linear(5, 6)

    def forward(self, x):
        att = torch.einsum("bqd,bkd->bqk", self.q(x), self.k(x)).softmax(-1)
        return self.o(torch.einsum("bqk,bkd->bqd", att, self.v(x)))


def test_einsum_ties_contracted_and_carried_dims():
    model, x = _EinsumAttention().eval(), torch.randn(2, 3, 6)
    res = analyze(model, x)
    assert {(g.size, tuple(g.layers)) for g in res.searchable_groups} == {
        (8, ("q", "k")),
        (5, ("v", "o")),
    }
    check_prune_each(model, x, res)


class _BiasTable(nn.Module):
    """Relative-position-bias style lookup: table[index] keeps the heads dim."""

    def __init__(self):
        super().__init__()
        self.qk = nn.Linear(6, 8)  # 2 heads x 4
        self.table = nn.Parameter(torch.randn(7, 2))
        self.register_buffer("index", torch.randint(0, 7, (3, 3)))
        self.o = nn.Linear(8, 6)

    def forward(self, x):
        b, s, _ = x.shape
        q = self.qk(x).view(b, s, -1, 4).transpose(1, 2)  # (b, heads, s, 4)
        bias = self.table[self.index.view(-1)].view(s, s, -1).permute(2, 0, 1)
        att = (q @ q.transpose(-1, -2) + bias.unsqueeze(0)).softmax(-1)
        return self.o((att @ q).transpose(1, 2).reshape(b, s, -1))


def test_index_lookup_keeps_heads_searchable():
    model, x = _BiasTable().eval(), torch.randn(2, 3, 6)
    res = analyze(model, x)
    heads = next(g for g in res.searchable_groups if g.size == 2)
    assert ("table", 1) in {(m.tensor, m.dim) for m in heads.members}
    assert not res.group_of("table", 0)[0].searchable
    check_prune_each(model, x, res)


def test_unflatten_module_sizes_are_literals():
    model = nn.Sequential(
        nn.Linear(4, 6), nn.Unflatten(1, (2, 3)), nn.Flatten(1), nn.Linear(6, 2)
    ).eval()
    res = analyze(model, torch.randn(5, 4))
    assert res.searchable_groups == []
    groups = res.group_of("0.weight", 0)  # 6 = 2 x 3 factors, both fixed by the module
    assert [g.size for g in groups] == [2, 3]
    assert all(any("hard-coded size" in r for r in g.reasons) for g in groups)


def test_padding_a_feature_dim_freezes_it():
    class PadFeatures(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(8, 2)

        def forward(self, x):  # (B, S, 6) -> (B, S, 8)
            return self.b(nn.functional.pad(self.a(x), (1, 1)))

    res = analyze(PadFeatures().eval(), torch.randn(2, 3, 4))
    assert res.searchable_groups == []
    assert any("spatial size set by pad" in r for r in res.group_of("a.weight", 0)[0].reasons)


class _Chunked(nn.Module):
    """Two chunk halves feed different layers: they must still stay the same size."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(4, 3)
        self.c = nn.Linear(4, 3)

    def forward(self, x):
        left, right = self.a(x).chunk(2, dim=-1)
        return self.b(left) + self.c(right)


def test_chunk_pieces_are_tied_to_stay_equal():
    model, x = _Chunked().eval(), torch.randn(5, 4)
    res = analyze(model, x)
    (g,) = [g for g in res.searchable_groups if "a" in g.layers]
    assert g.size == 4
    assert {(m.tensor, m.dim) for m in g.members} >= {
        ("a.weight", 0),
        ("b.weight", 1),
        ("c.weight", 1),
    }
    check_prune_each(model, x, res)
