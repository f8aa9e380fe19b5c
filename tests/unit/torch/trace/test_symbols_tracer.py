import pytest
import torch
from torch import fx, nn

from modeloptim.torch.trace import (
    CLType,
    Symbol,
    SymInfo,
    SymMap,
    SymMapRegistry,
    SymState,
    analyze,
    dependency_groups,
    recursive_trace,
)

from .hand_models import ControlFlowNet, GroupedConvNet, NoSearchable, SharedTiedNet, TransformerNet


def test_registry_is_an_extension_point():
    reg = SymMapRegistry()

    class Scale(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.w = nn.Parameter(torch.ones(c))

        def forward(self, x):
            return x * self.w

    @reg.register(Scale)
    def _scale(m):
        c = Symbol("c", m.w.numel(), CLType.INCOMING)
        return SymInfo.of(c, tensors={"w": {0: c}}, inputs={"x": {-1: c}}, outputs={(): {-1: c}})

    model = nn.Sequential(nn.Linear(3, 5), Scale(5))
    sm = SymMap(model, reg)
    assert list(sm) == ["1"]
    assert sm["1"].symbols["c"].size == 5
    assert ("w", 0) in sm["1"].symbols["c"].elastic_dims


def test_subclass_with_new_forward_does_not_inherit_rule():
    class MyNorm(nn.LayerNorm):
        def forward(self, x):
            return super().forward(x.transpose(1, 2)).transpose(1, 2)

    class Plain(nn.LayerNorm):
        pass

    sm = SymMap(nn.Sequential(MyNorm(4), Plain(4)))
    assert list(sm) == ["1"]


def test_parameter_of_unexpected_shape_is_rejected_by_name():
    lin = nn.Linear(4, 3)
    lin.weight = nn.Parameter(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"module 0 \(Linear\): weight has shape \(3, 5\)"):
        SymMap(nn.Sequential(lin))
    with pytest.raises(ValueError, match="weight has shape"):
        analyze(nn.Sequential(lin), torch.randn(2, 4))


def test_graph_collection_api_with_failed_module():
    model = ControlFlowNet().eval()
    x = torch.randn(3, 4)
    gc = recursive_trace(model, example_inputs=((x,), {}))
    assert gc.is_failed(model.branch)
    assert "control flow" in gc.failure_msg(model.branch)
    assert gc.failure_msg(model.mid) is None
    assert isinstance(gc[model], fx.Graph)
    names = [n for n, _ in gc]
    assert names[0] == ""
    # the failed module's children are traced on their own; only the branch taken ran
    assert "branch.a" in names
    assert "branch.b" not in names
    assert gc.is_unvisited(model.branch.b)
    assert not gc.is_unvisited(model.mid)
    calls = [n.target for n in gc[model].nodes if n.op == "call_module"]
    assert "branch" in calls  # a leaf in the parent graph


def test_recursive_trace_without_example_and_bad_model():
    gc = recursive_trace(NoSearchable())
    assert len(gc) == 1
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module"):
        recursive_trace(lambda x: x)


def test_no_searchable_symbols_gives_empty_list_and_reasons():
    model = NoSearchable()
    assert dependency_groups(model, torch.randn(2, 4)) == []
    frozen = dependency_groups(model, torch.randn(2, 4), frozen=True)
    reasons = {r for g in frozen for r in g.reasons}
    assert reasons == {"input 'x' of the model", "output of the model"}


def test_bad_example_input():
    with pytest.raises(TypeError, match="example_input: expected a tensor"):
        analyze(NoSearchable(), 3.0)
    with pytest.raises(ValueError, match="example_input: the model's forward failed"):
        analyze(NoSearchable(), torch.randn(2, 5))


def test_symbol_states_and_queries():
    res = analyze(TransformerNet().eval(), torch.randn(2, 5, 6))
    out = dict(res.named_searchable_out_symbols())
    assert "ff.0.out_features" in out
    assert out["ff.0.out_features"].state == SymState.SEARCHABLE
    syms = dict(res.named_symbols())
    assert syms["ff.2.in_features"].state == SymState.DYNAMIC
    assert syms["ff.2.in_features"].parent is syms["ff.0.out_features"]
    assert syms["out.out_features"].state == SymState.CONSTANT
    assert "output of the model" in syms["out.out_features"].reasons
    assert syms["inp.in_features"].is_constant
    assert dict(res.named_dangling_symbols()) == {}
    grouped = analyze(GroupedConvNet().eval(), torch.randn(2, 3, 8, 8))
    # conv groups / group-norm groups are module-internal and stay free
    assert set(dict(grouped.named_dangling_symbols())) == {
        "dw.groups",
        "gconv.groups",
        "gn.num_groups",
    }
    cross = dict(res.named_cross_layer_symbols())
    assert "ln1.normalized_shape_0" in cross


def test_shared_layer_and_tied_embedding():
    model = SharedTiedNet().eval()
    res = analyze(model, torch.randint(0, 20, (2, 5)))
    hidden = next(g for g in res.searchable_groups if g.size == 12)
    tensors = {(m.tensor, m.dim) for m in hidden.members}
    # the shared Linear is tied on both sides; the tied embedding/lm_head is one tensor
    assert {("shared.weight", 0), ("shared.weight", 1), ("emb.weight", 1)} <= tensors
    assert ("lm_head.weight", 1) not in tensors  # same tensor object as emb.weight


def test_register_leaf_keeps_module_opaque_and_frozen():
    from modeloptim.torch.trace import register_leaf
    from modeloptim.torch.trace import tracer as tracer_mod

    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Linear(8, 8)

        def forward(self, x):
            return self.p(x)

    model = nn.Sequential(nn.Linear(4, 8), Mixer(), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 4)
    assert {g.size for g in dependency_groups(model, x)} == {8}
    rule = register_leaf(lambda m: isinstance(m, Mixer))
    try:
        res = analyze(model, x)
        assert res.searchable_groups == []
        g = res.group_of("0.weight", 0)[0]
        assert any("unknown op Mixer" in r for r in g.reasons)
        assert [n.target for n in res.gc[model].nodes if n.op == "call_module"] == [
            "0",
            "1",
            "2",
            "3",
        ]
    finally:
        tracer_mod._LEAF_RULES.remove(rule)


def test_import_trace_does_not_import_transformers():
    import subprocess
    import sys

    code = (
        "import sys, modeloptim.torch.trace, modeloptim.cli.commands.trace\n"
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_concrete_args_pick_the_traced_branch():
    class Flagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x, use_b=True):
            return self.b(x) if use_b else self.a(x)

    model = Flagged()
    calls = [
        n.target
        for n in recursive_trace(model, concrete_args={"use_b": False})[model].nodes
        if n.op == "call_module"
    ]
    assert calls == ["a"]
    calls = [n.target for n in recursive_trace(model)[model].nodes if n.op == "call_module"]
    assert calls == ["b"]
