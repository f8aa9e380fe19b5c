"""Shared-input groups and producers found from the graph, not from names."""

from __future__ import annotations

import torch

from modeloptim.torch.quantization.algorithms.sharing import (
    find_shared_input_groups,
    fold_scale_into_producer,
    get_weight_2d,
)

from .conftest import lm_loop, token_batches


def _by_members(groups):
    return {tuple(sorted(g.names)): g for g in groups}


def test_weird_names_fanout_and_producers(weird_net):
    x = torch.randn(3, 5, 16)
    groups = _by_members(find_shared_input_groups(weird_net, lambda m: m(x)))
    assert set(groups) == {
        ("alpha", "beta", "gamma"),
        ("omega",),
        ("spoke_a", "spoke_b"),
        ("tail",),
    }
    g = groups[("alpha", "beta", "gamma")]
    assert g.producer == "zz_norm"
    assert g.foldable
    assert g.in_features == 16
    assert groups[("spoke_a", "spoke_b")].producer == "hub"
    assert groups[("spoke_a", "spoke_b")].foldable
    assert groups[("omega",)].producer is None  # input made by a functional product
    tail = groups[("tail",)]
    assert tail.producer == "side"
    assert not tail.foldable


def test_fold_into_custom_norm_is_exact(weird_net):
    x = torch.randn(3, 5, 16)
    ref = weird_net(x)
    groups = _by_members(find_shared_input_groups(weird_net, lambda m: m(x)))
    for members in [("alpha", "beta", "gamma"), ("spoke_a", "spoke_b")]:
        g = groups[members]
        s = torch.rand(16) + 0.5
        assert fold_scale_into_producer(g, 1 / s)
        for mod in g.modules:
            get_weight_2d(mod).mul_(s)
    torch.testing.assert_close(weird_net(x), ref, rtol=1e-5, atol=1e-5)


def test_fold_refused_when_not_exclusive(weird_net):
    x = torch.randn(2, 16)
    groups = _by_members(find_shared_input_groups(weird_net, lambda m: m(x)))
    before = weird_net.side.weight.detach().clone()
    assert not fold_scale_into_producer(groups[("tail",)], torch.full((16,), 2.0))
    torch.testing.assert_close(weird_net.side.weight, before)


def test_layer_called_twice_merges_groups():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.n1 = torch.nn.LayerNorm(8)
            self.n2 = torch.nn.LayerNorm(8)
            self.shared = torch.nn.Linear(8, 8)
            self.other = torch.nn.Linear(8, 8)

        def forward(self, x):
            a = self.n1(x)
            return self.shared(a) + self.shared(self.n2(x)) + self.other(a)

    groups = find_shared_input_groups(Twice(), lambda m: m(torch.randn(2, 8)))
    assert len(groups) == 1
    assert sorted(groups[0].names) == ["other", "shared"]
    assert not groups[0].foldable


def test_hf_llama_groups(tiny_llama):
    groups = _by_members(find_shared_input_groups(tiny_llama, lm_loop(token_batches(1))))
    for i in range(2):
        p = f"model.layers.{i}."
        qkv = groups[tuple(sorted(p + f"self_attn.{n}_proj" for n in "qkv"))]
        assert qkv.producer == p + "input_layernorm"
        assert qkv.foldable
        gu = groups[(p + "mlp.gate_proj", p + "mlp.up_proj")]
        assert gu.producer == p + "post_attention_layernorm"
        assert gu.foldable
        assert not groups[(p + "self_attn.o_proj",)].foldable
        assert not groups[(p + "mlp.down_proj",)].foldable
    assert groups[("lm_head",)].producer == "model.norm"


def test_hf_gpt2_conv1d_groups(tiny_gpt2):
    groups = _by_members(find_shared_input_groups(tiny_gpt2, lm_loop(token_batches(1))))
    g = groups[("transformer.h.0.attn.c_attn",)]
    assert g.producer == "transformer.h.0.ln_1"
    assert g.foldable
    assert get_weight_2d(g.modules[0]).shape == (96, 32)
    assert groups[("transformer.h.1.mlp.c_fc",)].producer == "transformer.h.1.ln_2"


def test_discover_groups_on_quantized_llama_equals_runtime_finder(tiny_llama):
    import modeloptim.torch.quantization as mtq
    from modeloptim.torch.quantization.algorithms.quant_utils import (
        discover_groups,
        full_precision,
        quant_linear_layers,
    )

    loop = lm_loop(token_batches(1))
    mtq.quantize(tiny_llama, mtq.INT8_DEFAULT_CFG, loop)
    graph = discover_groups(tiny_llama, loop)
    assert {g.source.value for g in graph} == {"graph"}
    layers = set(quant_linear_layers(tiny_llama).values())
    with full_precision(tiny_llama):
        runtime = find_shared_input_groups(tiny_llama, loop, lambda _n, m: m in layers)

    def summary(gs):
        return [(g.names, g.producer, g.foldable) for g in gs]

    assert summary(graph) == summary(runtime)
    # a disabled quantizer passes its input through: it is no producer (o_proj reads
    # functional attention output)
    o_proj = _by_members(runtime)[("model.layers.0.self_attn.o_proj",)]
    assert o_proj.producer is None
