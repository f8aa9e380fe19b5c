"""`shared_input_groups`: layers reading one graph value, producers, fallback, vs runtime."""

from __future__ import annotations

import pytest
import torch

from modeloptim.torch.trace import (
    GroupSource,
    find_shared_input_groups,
    get_weight_2d,
    shared_input_groups,
)
from modeloptim.torch.trace import shared_inputs as shared_inputs_mod

from .shared_models import TinyMoE, Unusual, WithMoody


def _by_members(groups):
    return {tuple(sorted(g.names)): g for g in groups}


def _summary(groups):
    return {tuple(sorted(g.names)): (g.producer, g.foldable, g.in_features) for g in groups}


def test_unusual_names_dict_fanout_and_producers():
    torch.manual_seed(0)
    model = Unusual()
    x = torch.randn(2, 5, 16)
    groups = _by_members(shared_input_groups(model, x))
    assert set(groups) == {
        ("alpha", "heads.u", "heads.w", "zz.1"),
        ("omega",),
        ("tail",),
    }
    g = groups[("alpha", "heads.u", "heads.w", "zz.1")]
    assert g.producer == "zz.0"
    assert g.producer_module is model.zz[0]
    assert g.in_features == 16
    assert g.source is GroupSource.GRAPH
    assert not g.foldable  # heads.w reads a row slice: shared amax, no fold
    assert groups[("omega",)].producer is None
    assert groups[("omega",)].in_features == 24
    tail = groups[("tail",)]
    assert tail.producer == "side"
    assert not tail.exclusive  # side's output is also read by the residual add


def test_fanout_without_row_reader_is_foldable_and_equals_runtime():
    torch.manual_seed(0)
    model = Unusual()
    model.heads.pop("w")
    model.forward = lambda x: _no_w_forward(model, x)  # type: ignore[method-assign]
    x = torch.randn(2, 5, 16)
    graph = shared_input_groups(model, x)
    g = _by_members(graph)[("alpha", "heads.u", "zz.1")]
    assert g.foldable
    torch.testing.assert_close(g.probe, x)
    runtime = find_shared_input_groups(model, lambda m: m(x))
    assert _summary(graph) == _summary(runtime)
    assert [g.names for g in graph] == [g.names for g in runtime]  # same first-call order


def _no_w_forward(model, x):
    h = model.zz[0](x)
    outs = {k: layer(h) for k, layer in model.heads.items()}
    y = model.alpha(h) * torch.sigmoid(model.zz[1](h))
    x = x + model.omega(y) + outs["u"].sum(-1, keepdim=True)
    s = model.side(x)
    return model.tail(s) + s


def test_runtime_reference_differs_only_on_row_slices():
    torch.manual_seed(0)
    model = Unusual()
    x = torch.randn(2, 5, 16)
    runtime = _summary(find_shared_input_groups(model, lambda m: m(x)))
    # the runtime finder sees h[:, :1] as a different tensor (other shape)
    assert runtime[("alpha", "heads.u", "zz.1")] == ("zz.0", False, 16)  # slice reads it too
    assert runtime[("heads.w",)][0] is None


def test_failed_module_placeholders_follow_parent_graph_else_runtime():
    torch.manual_seed(0)
    model = WithMoody()
    x = torch.randn(3, 16)
    groups = _by_members(shared_input_groups(model, x))
    qk = groups[("blk.k", "blk.q")]
    # q/k were traced on their own (blk failed); their input is blk's argument = pre's output
    assert qk.source is GroupSource.GRAPH
    assert qk.producer == "pre"
    assert not qk.exclusive  # blk's own code reads it too (x.sum(), inner): seen at run time
    assert "blk reads the value but failed to trace" in qk.reason
    rs = groups[("blk.r", "blk.s")]
    assert rs.source is GroupSource.RUNTIME
    assert rs.producer == "blk.inner"
    assert rs.foldable
    assert "computed inside blk, which failed to trace" in rs.reason
    assert "control flow" in rs.reason  # the tracer's own error is kept
    assert groups[("out",)].source is GroupSource.GRAPH
    assert groups[("out",)].producer == "blk"


def test_moe_experts_share_router_input_through_rows():
    torch.manual_seed(0)
    model = TinyMoE()
    x = torch.randn(2, 6, 16)
    groups = shared_input_groups(model, x)
    assert len(groups) == 1
    g = groups[0]
    assert g.names == ["router", "experts.0", "experts.1", "experts.2"]
    assert g.producer == "ln"
    assert not g.foldable
    assert g.source is GroupSource.GRAPH
    # the runtime finder cannot see that the experts read rows of the router's input
    runtime = _by_members(find_shared_input_groups(model, lambda m: m(x)))
    assert ("experts.0",) in runtime


def test_forward_loop_captures_first_call_and_stops():
    torch.manual_seed(0)
    model = Unusual()
    batches = [torch.randn(2, 5, 16) for _ in range(3)]
    seen = []

    def loop(m):
        for b in batches:
            seen.append(b)
            m(b)

    by_loop = shared_input_groups(model, forward_loop=loop)
    assert len(seen) == 1
    assert _summary(by_loop) == _summary(shared_input_groups(model, (batches[0],)))


def test_predicate_limits_candidates():
    model = Unusual()
    groups = shared_input_groups(
        model, torch.randn(2, 3, 16), predicate=lambda n, _m: n in {"alpha", "tail"}
    )
    assert sorted(tuple(g.names) for g in groups) == [("alpha",), ("tail",)]
    assert not groups[0].exclusive  # zz.1 etc. still read zz.0's output


def test_whole_trace_failure_falls_back_to_runtime(monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError("no graph today")

    monkeypatch.setattr(shared_inputs_mod, "recursive_trace", boom)
    model = WithMoody()
    groups = shared_input_groups(model, torch.randn(3, 16))
    assert {g.source for g in groups} == {GroupSource.RUNTIME}
    assert all("no graph today" in g.reason for g in groups)
    assert _summary(groups) == _summary(
        find_shared_input_groups(model, lambda m: m(torch.randn(3, 16)))
    )


def test_bad_arguments_are_named():
    model = Unusual()
    with pytest.raises(TypeError, match="model"):
        shared_input_groups("net", torch.randn(1, 16))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="example_inputs/forward_loop"):
        shared_input_groups(model)
    with pytest.raises(ValueError, match="example_inputs/forward_loop"):
        shared_input_groups(model, torch.randn(1, 16), forward_loop=lambda m: None)
    with pytest.raises(ValueError, match="forward_loop"):
        shared_input_groups(model, forward_loop=lambda m: None)
    with pytest.raises(TypeError, match="predicate"):
        shared_input_groups(model, torch.randn(1, 16), predicate=3)  # type: ignore[arg-type]


# -- transformers models ---------------------------------------------------------------------


def _ids(n=2, seq=12, vocab=128):
    return torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(0))


def _loop(m):
    m(input_ids=_ids())


@pytest.mark.hf
def test_hf_llama_groups_equal_runtime():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    graph = shared_input_groups(model, forward_loop=_loop)
    groups = _by_members(graph)
    for i in range(2):
        p = f"model.layers.{i}."
        qkv = groups[tuple(sorted(p + f"self_attn.{n}_proj" for n in "qkv"))]
        assert qkv.producer == p + "input_layernorm"
        assert qkv.foldable
        assert qkv.source is GroupSource.GRAPH
        gu = groups[(p + "mlp.gate_proj", p + "mlp.up_proj")]
        assert gu.producer == p + "post_attention_layernorm"
        assert gu.foldable
        # o_proj reads attention output made by functional code; down_proj reads act * up
        assert groups[(p + "self_attn.o_proj",)].producer is None
        assert groups[(p + "mlp.down_proj",)].producer is None
    lm = groups[("lm_head",)]
    assert lm.producer == "model.norm"  # seen through hidden_states[:, -0:, :]
    assert not lm.foldable
    assert len(graph) == 9
    runtime = find_shared_input_groups(model, _loop)
    assert _summary(graph) == _summary(runtime)
    assert [g.names for g in graph] == [g.names for g in runtime]


@pytest.mark.hf
def test_hf_gpt2_conv1d_groups_equal_runtime():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    graph = shared_input_groups(model, forward_loop=_loop)
    groups = _by_members(graph)
    for i in range(2):
        p = f"transformer.h.{i}."
        g = groups[(p + "attn.c_attn",)]
        assert g.producer == p + "ln_1"
        assert g.foldable
        assert get_weight_2d(g.modules[0]).shape == (96, 32)
        assert g.in_features == 32
        assert groups[(p + "mlp.c_fc",)].producer == p + "ln_2"
        assert groups[(p + "mlp.c_fc",)].foldable
        assert groups[(p + "mlp.c_proj",)].producer == p + "mlp.act"
        assert groups[(p + "mlp.c_proj",)].in_features == 128
    assert _summary(graph) == _summary(find_shared_input_groups(model, _loop))


@pytest.mark.hf
def test_hf_qwen2_moe_shared_expert_sees_through_view():
    """transformers 5 MoE experts are one module with 3-D weights (no linear layers to
    group); the shared expert and its gate read ``h.view(-1, d)`` of the post-attention norm.
    """
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen2MoeConfig(
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=32,
        num_experts=4,
        num_experts_per_tok=2,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    torch.manual_seed(0)
    model = transformers.Qwen2MoeForCausalLM(cfg).eval()
    groups = _by_members(shared_input_groups(model, forward_loop=_loop))
    p = "model.layers.0.mlp."
    shared = groups[
        (p + "shared_expert.gate_proj", p + "shared_expert.up_proj", p + "shared_expert_gate")
    ]
    assert shared.producer == "model.layers.0.post_attention_layernorm"
    assert not shared.foldable  # the router reads it too
    assert shared.source is GroupSource.GRAPH
    # the runtime finder sees the view as a new tensor: same members, producer unknown
    runtime = _by_members(find_shared_input_groups(model, _loop))
    assert runtime[tuple(sorted(shared.names))].producer is None


def test_identity_modules_are_seen_through():
    class Drop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.n = torch.nn.LayerNorm(8)
            self.drop = torch.nn.Dropout(0.1)
            self.keep = torch.nn.Identity()
            self.q = torch.nn.Linear(8, 8)
            self.k = torch.nn.Linear(8, 8)

        def forward(self, x):
            h = self.drop(self.n(x))
            return self.q(h) + self.k(self.keep(h))

    model = Drop().eval()
    (g,) = shared_input_groups(model, torch.randn(2, 8))
    assert g.names == ["q", "k"]
    assert g.producer == "n"
    assert g.foldable
    model.train()  # dropout now changes the tensor: it is the producer
    (g,) = shared_input_groups(model, torch.randn(2, 8))
    assert g.producer == "drop"
    assert g.producer_module is model.drop


@pytest.mark.hf
def test_hf_llama_attention_that_fails_to_trace(monkeypatch):
    """q/k/v traced on their own still get input_layernorm; o_proj falls back to run time."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama

    original = modeling_llama.LlamaAttention.forward

    def moody(self, hidden_states, *args, **kwargs):
        if self.o_proj.weight.sum() > 1e9:  # data-dependent branch: torch.fx cannot trace it
            raise AssertionError
        return original(self, hidden_states, *args, **kwargs)

    monkeypatch.setattr(modeling_llama.LlamaAttention, "forward", moody)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    graph = shared_input_groups(model, forward_loop=_loop)
    groups = _by_members(graph)
    p = "model.layers.0."
    qkv = groups[tuple(sorted(p + f"self_attn.{n}_proj" for n in "qkv"))]
    assert qkv.source is GroupSource.GRAPH
    assert qkv.producer == p + "input_layernorm"
    assert qkv.foldable  # decided by the runtime readers: only q/k/v read the norm's output
    assert "model.layers.0.self_attn reads the value but failed to trace" in qkv.reason
    o = groups[(p + "self_attn.o_proj",)]
    assert o.source is GroupSource.RUNTIME
    assert "computed inside model.layers.0.self_attn" in o.reason
    assert groups[(p + "mlp.gate_proj", p + "mlp.up_proj")].source is GroupSource.GRAPH
    assert _summary(graph) == _summary(find_shared_input_groups(model, _loop))


def test_model_whose_own_forward_fails_to_trace():
    class Root(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(8)
            self.a = torch.nn.Linear(8, 8)
            self.b = torch.nn.Linear(8, 8)
            self.c = torch.nn.Linear(8, 8)
            self.d = torch.nn.Linear(8, 8)

        def forward(self, x):
            if x.sum() > 1e9:  # the root itself cannot be traced
                x = -x
            h = self.norm(x)
            return self.a(h) + self.b(h) + self.c(x) + self.d(x)

    model = Root()
    x = torch.randn(3, 8)
    groups = _by_members(shared_input_groups(model, x))
    cd = groups[("c", "d")]  # read the model input: resolved through the root's arguments
    assert cd.source is GroupSource.GRAPH
    assert cd.producer is None
    ab = groups[("a", "b")]
    assert ab.source is GroupSource.RUNTIME
    assert ab.producer == "norm"
    assert ab.foldable
    assert "failed to trace" in ab.reason
    assert _summary(groups.values()) == _summary(find_shared_input_groups(model, lambda m: m(x)))


def test_layers_reading_a_model_input_form_one_group():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Linear(8, 4)
            self.d = torch.nn.Linear(8, 4)
            self.e = torch.nn.Linear(8, 4)

        def forward(self, x, y):
            return self.c(x) + self.d(x) + self.e(y)

    model = Two()
    x, y = torch.randn(2, 8), torch.randn(2, 8)
    groups = shared_input_groups(model, (x, y))
    assert [g.names for g in groups] == [["c", "d"], ["e"]]
    assert all(g.producer is None and g.source is GroupSource.GRAPH for g in groups)


def test_format_table_lists_every_group():
    from modeloptim.torch.trace import format_shared_input_groups

    model = WithMoody()
    groups = shared_input_groups(model, torch.randn(3, 16))
    lines = format_shared_input_groups(groups).splitlines()
    assert lines[0].split() == ["#", "layers", "in", "producer", "fold", "source"]
    assert set(lines[1]) == {"-"}
    assert len(lines) == 2 + len(groups)
    row = next(line for line in lines if "blk.r, blk.s" in line)
    assert row.split()[3:6] == ["16", "blk.inner", "yes"]
    assert "runtime (the input of blk.r is computed inside blk" in row
