"""transformers models built from configs (random weights): every searchable group prunes."""

import copy
import time
from collections import Counter

import pytest
import torch

pytest.importorskip("transformers")

from modeloptim.torch.trace import analyze, prune_group, zoo

from .invariant import check_prune_all, check_prune_each, half

pytestmark = pytest.mark.hf

# (zoo name, minimum number of searchable groups expected)
ZOO_MODELS = [
    ("resnet", 5),
    ("mobilenetv2", 10),
    ("convnext", 4),
    ("efficientnet", 5),
    ("regnet", 6),
    ("vit", 5),
    ("swin", 6),
    ("bert", 6),
    ("gpt2", 5),
    ("llama-tiny", 5),
]


@pytest.mark.parametrize(("name", "min_groups"), ZOO_MODELS)
def test_zoo_prune_half_runs(name, min_groups):
    model, example = zoo.build(name)
    res = analyze(model, example)
    assert len(res.searchable_groups) >= min_groups, [g.name for g in res.groups]
    check_prune_each(model, example, res)
    for g in res.frozen_groups:
        assert g.reasons
    check_prune_all(copy.deepcopy(model), example, analyze(model, example))


def test_llama_tiny_groups_are_the_expected_hparams():
    model, example = zoo.build("llama-tiny")
    res = analyze(model, example)
    by_size = Counter(g.size for g in res.searchable_groups)
    # hidden 16 (one group), per layer: 2 KV heads (with their query groups), FFN 32
    assert by_size == {16: 1, 2: 2, 32: 2}
    hidden = next(g for g in res.searchable_groups if g.size == 16)
    tensors = {(m.tensor, m.dim) for m in hidden.members}
    assert ("model.embed_tokens.weight", 1) in tensors
    assert ("model.norm.weight", 0) in tensors
    for i in range(2):
        p = f"model.layers.{i}"
        assert {
            (f"{p}.self_attn.q_proj.weight", 1),
            (f"{p}.self_attn.o_proj.weight", 0),
            (f"{p}.mlp.down_proj.weight", 0),
            (f"{p}.input_layernorm.weight", 0),
        } <= tensors
    heads = [g for g in res.searchable_groups if g.size == 2]
    assert {m.tensor for m in heads[0].members} == {
        f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkvo"
    }
    # q_proj rows: 2 KV heads x 2 queries each x head_dim 4 -> one KV head = 8 query rows
    q = next(m for m in heads[0].members if m.tensor.endswith("q_proj.weight"))
    assert q.layout == "16 of 16 in blocks of 8"
    frozen = " ".join(r for g in res.frozen_groups for r in g.reasons)
    assert "sliced" in frozen  # rotary embedding slices head_dim in halves


def test_llama_tiny_pruned_heads_and_hidden_match_a_smaller_config():
    """Pruning kv heads, FFN and hidden gives a model that a smaller config would build."""
    model, example = zoo.build("llama-tiny")
    res = analyze(model, example)
    for g in res.searchable_groups:
        prune_group(model, g, half(g.size))
    sd = model.state_dict()
    assert sd["model.layers.0.self_attn.q_proj.weight"].shape == (8, 8)
    assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (4, 8)
    assert sd["model.layers.0.mlp.up_proj.weight"].shape == (16, 8)
    assert sd["lm_head.weight"].shape == (100, 8)
    out = model(**example).logits
    assert out.shape == (1, 8, 100)
    assert torch.isfinite(out).all()


def test_smollm2_architecture_traces_fast():
    from modeloptim.torch.trace.zoo import ZOO

    model, example = ZOO["smollm2-config"]()
    model.eval()
    t0 = time.perf_counter()
    res = analyze(model, example)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0, f"trace + analysis took {elapsed:.1f}s"
    assert not list(res.gc.named_failed())
    by_size = Counter(g.size for g in res.searchable_groups)
    assert by_size == {576: 1, 3: 30, 1536: 30}
    # prune the hidden size and one layer's FFN in place; the model still runs
    hidden = next(g for g in res.searchable_groups if g.size == 576)
    ffn = next(g for g in res.searchable_groups if g.size == 1536)
    prune_group(model, hidden, list(range(0, 576, 2)))
    prune_group(model, ffn, list(range(768)))
    with torch.no_grad():
        logits = model(**example).logits
    assert logits.shape == (1, 8, 49152)
    assert model.model.embed_tokens.weight.shape == (49152, 288)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_hf_search_space_names_llama_hparams_and_depth_drop_runs():
    from modeloptim.torch.trace.plugins.huggingface import hf_search_space

    model, example = zoo.build("llama-tiny")
    space = hf_search_space(model, analyze(model, example))
    sizes = {k: (v.size, v.searchable) for k, v in space.items()}
    assert sizes == {
        "hidden_size": (16, True),
        "num_hidden_layers": (2, True),
        "layers.0.heads": (2, True),
        "layers.0.intermediate_size": (32, True),
        "layers.1.heads": (2, True),
        "layers.1.intermediate_size": (32, True),
    }
    # depth is searchable: dropping a decoder layer keeps the model running
    model.model.layers = torch.nn.ModuleList([model.model.layers[0]])
    model.config.num_hidden_layers = 1
    assert model(**example).logits.shape == (1, 8, 100)


def test_llama_pruning_equals_zeroing_the_removed_channels():
    """Numerics: removing a KV head (with its query group) / FFN units equals zeroing their
    contribution in the unpruned model (float64)."""
    model, example = zoo.build("llama-tiny")
    model = model.double()
    res = analyze(model, example)
    heads = next(
        g
        for g in res.searchable_groups
        if g.size == 2 and g.layers[0].startswith("model.layers.0.")
    )
    ffn = next(
        g
        for g in res.searchable_groups
        if g.size == 32 and g.layers[0].startswith("model.layers.1.")
    )
    ref = copy.deepcopy(model)
    with torch.no_grad():
        # KV head 1 serves query heads 2 and 3 (head_dim 4): o_proj input columns 8..15
        ref.model.layers[0].self_attn.o_proj.weight[:, 8:16] = 0
        ref.model.layers[1].mlp.down_proj.weight[:, 16:] = 0
    prune_group(model, heads, [0])
    prune_group(model, ffn, list(range(16)))
    with torch.no_grad():
        torch.testing.assert_close(
            model(**example).logits, ref(**example).logits, rtol=1e-10, atol=1e-10
        )


def test_gpt2_heads_prune_with_attribute_fixup():
    model, example = zoo.build("gpt2")
    res = analyze(model, example)
    heads = next(
        g
        for g in res.searchable_groups
        if g.size == 2
        and g.layers == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]
    )
    prune_group(model, heads, [1])
    attn = model.transformer.h[0].attn
    assert (attn.num_heads, attn.split_size, attn.c_attn.nf, attn.c_proj.nx) == (1, 8, 24, 8)
    assert model(**example).logits.shape == (1, 8, 100)
