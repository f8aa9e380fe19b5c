"""minitron on a tiny LLaMA built from a config: params budget, depth, save/restore."""

from __future__ import annotations

import copy

import pytest
import torch

import modeloptim.torch.opt as mto
import modeloptim.torch.prune as mtp
from modeloptim.torch.prune.depth import block_influence
from modeloptim.torch.utils.profile import count_params

transformers = pytest.importorskip("transformers")

IDS = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(0))
DATA = [
    {"input_ids": torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(i))}
    for i in range(1, 4)
]


def _llama(layers: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        tie_word_embeddings=True,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def test_width_to_75_percent_params_round_trips(tmp_path) -> None:
    model = _llama()
    fresh = copy.deepcopy(model)
    p0 = count_params(model)
    pruned, state = mtp.prune(
        model, "minitron", {"params": "75%"}, {"input_ids": IDS}, {"data_loader": DATA}
    )
    p1 = count_params(pruned)
    assert 0.70 * p0 <= p1 <= 0.75 * p0
    assert state["best"]["cost"]["params"] == p1
    hidden = pruned.model.embed_tokens.weight.shape[1]
    assert hidden < 64
    assert hidden % 8 == 0
    assert pruned.config.hidden_size == hidden
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight  # still tied
    for layer in pruned.model.layers:
        assert layer.self_attn.q_proj.in_features == hidden
        assert layer.mlp.down_proj.out_features == hidden
        assert layer.input_layernorm.weight.shape == (hidden,)
    out = pruned(input_ids=IDS).logits
    assert out.shape == (2, 10, 128)
    assert torch.isfinite(out).all()
    path = tmp_path / "m.pt"
    mto.save(pruned, path)
    restored = mto.restore(fresh, path)
    torch.testing.assert_close(restored(input_ids=IDS).logits, out, rtol=0, atol=0)


def test_activation_importance_keeps_the_loud_channels() -> None:
    model = _llama(2)
    with torch.no_grad():  # hidden channels 0..7 carry 100x larger embeddings
        model.model.embed_tokens.weight[:, :8] *= 100
    pruned, _ = mtp.prune(
        model,
        [("minitron", {"prune": ["hidden"]})],
        {"params": "80%"},
        {"input_ids": IDS},
        {"data_loader": DATA},
    )
    ref = _llama(2).model.embed_tokens.weight
    kept = pruned.model.embed_tokens.weight
    torch.testing.assert_close(kept[:, :8], ref[:, :8] * 100)


def test_depth_drops_the_layer_that_does_nothing() -> None:
    model = _llama(4)
    with torch.no_grad():  # layer 2 adds zero to the residual stream: block influence 0
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    bi = block_influence(model, "model.layers", DATA)
    assert float(bi[2]) == pytest.approx(0.0, abs=1e-12)
    assert bool((bi[[0, 1, 3]] > 1e-6).all())
    kept_q = [model.model.layers[i].self_attn.q_proj.weight.clone() for i in (0, 1, 3)]
    pruned, _ = mtp.prune(
        model,
        [("minitron", {"prune": ["ffn"]})],
        {"params": "99%"},
        {"input_ids": IDS},
        {"data_loader": DATA, "num_layers": 3},
    )
    assert len(pruned.model.layers) == 3
    assert pruned.config.num_hidden_layers == 3
    assert [la.self_attn.layer_idx for la in pruned.model.layers] == [0, 1, 2]
    for la, w in zip(pruned.model.layers, kept_q, strict=True):  # layers 0, 1, 3 remain
        torch.testing.assert_close(la.self_attn.q_proj.weight, w, rtol=0, atol=0)
    out = pruned.generate(IDS[:1, :4], max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 7)


def test_minitron_needs_data() -> None:
    model = _llama(2)
    with pytest.raises(ValueError, match="minitron needs 'data_loader'"):
        mtp.prune(model, "minitron", {"params": "75%"}, {"input_ids": IDS})


def test_search_with_score_keeps_unpruned_kinds_full() -> None:
    model = _llama(2)
    scored = []

    def score(m: torch.nn.Module) -> float:
        scored.append(m.model.embed_tokens.weight.shape[1])
        with torch.no_grad():
            return -float(m(input_ids=IDS).logits.float().std())

    pruned, state = mtp.prune(
        model,
        [("minitron", {"prune": ["ffn"]})],
        {"params": "90%"},
        {"input_ids": IDS},
        {"data_loader": DATA, "score_func": score, "num_candidates": 3},
    )
    assert scored == [64, 64, 64]  # hidden never shrinks when only FFN may
    assert len(state["candidates"]) == 3
    assert pruned.model.embed_tokens.weight.shape[1] == 64
    assert all(la.mlp.gate_proj.out_features < 96 for la in pruned.model.layers)


def test_elastic_llama_equals_physical_subnet() -> None:
    from modeloptim.torch.prune.builders import build_space
    from modeloptim.torch.prune.elastic import activate, convert_elastic

    model = _llama(2)
    space = build_space(model, {"input_ids": IDS})
    assert {g.kind for g in space.groups} == {"hidden", "heads", "ffn"}
    g = torch.Generator().manual_seed(0)
    keep = space.keep_vector(
        {gr.name: torch.randperm(gr.size, generator=g)[: gr.size // 2] for gr in space.groups}
    )
    physical = space.plan(keep).apply(copy.deepcopy(model))
    assert physical.model.layers[0].self_attn.k_proj.weight.shape == (16, 32)  # 1 of 2 KV heads
    convert_elastic(model, space)
    activate(model, keep)
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=IDS).logits, physical(input_ids=IDS).logits, rtol=0, atol=1e-6
        )
