"""auto_quantize: budget respected, recipe applied, knapsack optimal vs brute force."""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.auto_quantize import (
    NO_QUANT,
    auto_quantize,
    solve_multiple_choice_knapsack,
)
from modeloptim.torch.quantization.nn import TensorQuantizer


def test_knapsack_matches_brute_force():
    rng = random.Random(0)
    for _ in range(30):
        n = rng.randint(1, 5)
        scores = [[rng.random() for _ in range(3)] for _ in range(n)]
        costs = [[rng.randint(1, 10) for _ in range(3)] for _ in range(n)]
        budget = rng.randint(sum(min(c) for c in costs), sum(max(c) for c in costs))
        picks = solve_multiple_choice_knapsack(scores, costs, budget, resolution=budget)
        best = min(
            sum(scores[u][j] for u, j in enumerate(combo))
            for combo in itertools.product(range(3), repeat=n)
            if sum(costs[u][j] for u, j in enumerate(combo)) <= budget
        )
        assert sum(costs[u][j] for u, j in enumerate(picks)) <= budget
        assert sum(scores[u][j] for u, j in enumerate(picks)) == pytest.approx(best)


def test_knapsack_infeasible_budget():
    with pytest.raises(ValueError, match="budget"):
        solve_multiple_choice_knapsack([[0.0, 1.0]], [[10.0, 20.0]], 5.0)


@pytest.fixture
def llama_and_data():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 128, (2, 16), generator=g) for _ in range(3)]
    return model, data


def _run(model, data, bits):
    return auto_quantize(
        model,
        constraints={"effective_bits": bits},
        quantization_formats=[mtq.NVFP4_DEFAULT_CFG, "FP8_DEFAULT_CFG"],
        data_loader=data,
        forward_step=lambda m, b: m(input_ids=b, labels=b),
        loss_func=lambda out, b: out.loss,
        num_calib_steps=2,
        num_score_steps=2,
    )


@pytest.mark.parametrize("bits", [4.5, 6.0, 16.0])
def test_auto_quantize_respects_budget_and_applies_recipe(llama_and_data, bits):
    model, data = llama_and_data
    model, state = _run(model, data, bits)
    recipe = state["best"]["recipe"]
    assert len(recipe) == 7  # 7 linears; lm_head is excluded by the presets
    assert state["best"]["is_satisfied"]
    assert state["effective_bits"] <= bits + 1e-9
    if bits == 4.5:
        assert set(recipe.values()) == {"NVFP4_DEFAULT_CFG"}
    if bits == 16.0:
        assert set(recipe.values()) == {NO_QUANT}  # zero loss increase fits the budget
    # q/k/v read one tensor: one format
    p = "model.layers.0.self_attn."
    assert len({recipe[p + f"{x}_proj"] for x in "qkv"}) == 1
    # the model is quantized as the recipe says
    for name, fmt in recipe.items():
        wq = model.get_submodule(name).weight_quantizer
        assert isinstance(wq, TensorQuantizer)
        if fmt == NO_QUANT:
            assert not wq.is_enabled
        else:
            assert wq.is_enabled
            assert wq.format.name == ("nvfp4" if fmt.startswith("NVFP4") else "fp8_e4m3")
    # effective bits recomputed independently from the quantized model
    num = den = 0.0
    for name in recipe:
        layer = model.get_submodule(name)
        wq = layer.weight_quantizer
        b = wq.format.bits_per_element if wq.is_enabled else 16.0
        num += b * layer.weight.numel()
        den += layer.weight.numel()
    assert num / den == pytest.approx(state["effective_bits"])


def test_scores_rank_formats(llama_and_data):
    model, data = llama_and_data
    _, state = _run(copy.deepcopy(model), data, 6.0)
    for stats in state["candidate_stats"].values():
        s = dict(zip(stats["formats"], stats["scores"], strict=True))
        assert s[NO_QUANT] == 0.0
        assert s["NVFP4_DEFAULT_CFG"] > s["FP8_DEFAULT_CFG"] > 0.0


def test_bad_input_is_rejected_before_touching_model(llama_and_data):
    model, data = llama_and_data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="effective_bits"):
        auto_quantize(
            model, {"bits": 4}, [mtq.FP8_DEFAULT_CFG], data, lambda m, b: m(b), lambda o, b: o
        )
    with pytest.raises(ValueError, match="quantization_formats"):
        auto_quantize(
            model, {"effective_bits": 4}, ["NOPE_CFG"], data, lambda m, b: m(b), lambda o, b: o
        )
    with pytest.raises(ValueError, match="budget"):
        _run(model, data, 3.0)
    assert not any(isinstance(m, TensorQuantizer) for m in model.modules())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
