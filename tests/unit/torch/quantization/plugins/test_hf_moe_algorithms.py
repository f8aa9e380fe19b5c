"""AWQ, SmoothQuant and GPTQ on transformers-5 3-D MoE experts (tiny Qwen2-MoE).

The model gets activation outliers (a few RMSNorm channels scaled by 25) so that the
activation-aware algorithms have something to fix; calibration and evaluation tokens are
disjoint. Error = mean squared logit difference to the float model on the evaluation batches.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq

from ._hf_moe import experts_of, lm_loop, one_thread, qwen2_moe, token_batches, with_outliers

pytest.importorskip("transformers")

from modeloptim.torch.quantization.algorithms.quant_utils import discover_groups
from modeloptim.torch.quantization.conversion import is_quantized

__all__ = ["one_thread"]  # the autouse fixture

CALIB = token_batches(4, 32, seed=1)
EVAL = token_batches(3, 32, seed=2)


@pytest.fixture(scope="module")
def base() -> tuple[nn.Module, list[torch.Tensor]]:
    model = with_outliers(qwen2_moe(num_experts=8))
    with torch.no_grad():
        ref = [model(input_ids=b).logits for b in EVAL]
    return model, ref


def _error(model: nn.Module, ref: list[torch.Tensor]) -> float:
    with torch.no_grad():
        errs = [
            ((model(input_ids=b).logits - r) ** 2).mean().item()
            for b, r in zip(EVAL, ref, strict=True)
        ]
    return sum(errs) / len(errs)


def _int4(algorithm: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(mtq.INT4_AWQ_CFG)
    cfg["quant_cfg"][0]["cfg"]["block_sizes"] = {-1: 32, "type": "static"}
    cfg["algorithm"] = algorithm
    return cfg


def _pre_scaled(model: nn.Module, proj: str) -> list[bool]:
    return [
        experts.expert(e).get_submodule(proj).input_quantizer.pre_quant_scale is not None
        for experts in experts_of(model)
        for e in range(int(experts.num_experts))
    ]


def test_gate_up_of_every_expert_joins_the_shared_expert_group(
    base: tuple[nn.Module, list[torch.Tensor]],
) -> None:
    model = copy.deepcopy(base[0])
    mtq.quantize(model, _int4(None))
    groups = {tuple(g.names) for g in discover_groups(model, lm_loop(CALIB[:1]))}
    for layer in range(2):
        p = f"model.layers.{layer}.mlp"
        expected = (
            f"{p}.shared_expert.gate_proj",
            f"{p}.shared_expert.up_proj",
            *(f"{p}.experts.{e}.gate_up_proj" for e in range(8)),
        )
        assert expected in groups
        for e in range(8):  # each expert's down_proj reads its own activations
            assert (f"{p}.experts.{e}.down_proj",) in groups


def test_smoothquant_beats_plain_w8a8_and_smooths_every_expert(
    base: tuple[nn.Module, list[torch.Tensor]],
) -> None:
    model, ref = base
    plain_cfg = copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG)
    plain_cfg["algorithm"] = "max"
    plain = mtq.quantize(copy.deepcopy(model), plain_cfg, lm_loop(CALIB))
    sq = mtq.quantize(copy.deepcopy(model), copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG), lm_loop(CALIB))
    assert all(_pre_scaled(sq, "gate_up_proj"))
    assert all(_pre_scaled(sq, "down_proj"))
    e_plain, e_sq = _error(plain, ref), _error(sq, ref)
    assert e_sq < 0.8 * e_plain, (e_sq, e_plain)


def test_awq_lite_beats_rtn_and_scales_every_expert(
    base: tuple[nn.Module, list[torch.Tensor]],
) -> None:
    model, ref = base
    rtn = mtq.quantize(copy.deepcopy(model), _int4("max"), lm_loop(CALIB))
    awq = mtq.quantize(copy.deepcopy(model), _int4({"method": "awq_lite"}), lm_loop(CALIB))
    assert all(_pre_scaled(awq, "gate_up_proj"))
    assert all(_pre_scaled(awq, "down_proj"))
    e_rtn, e_awq = _error(rtn, ref), _error(awq, ref)
    assert e_awq < 0.8 * e_rtn, (e_awq, e_rtn)


def test_gptq_updates_every_expert_and_beats_rtn(
    base: tuple[nn.Module, list[torch.Tensor]],
) -> None:
    model, ref = base
    rtn = mtq.quantize(copy.deepcopy(model), _int4("max"), lm_loop(CALIB))
    gptq = mtq.quantize(copy.deepcopy(model), _int4({"method": "gptq"}), lm_loop(CALIB))
    for a, b in zip(experts_of(rtn), experts_of(gptq), strict=True):
        for e in range(8):
            for proj in ("gate_up_proj", "down_proj"):
                la, lb = a.expert(e).get_submodule(proj), b.expert(e).get_submodule(proj)
                with torch.no_grad():
                    qa, qb = la.weight_quantizer(la.weight), lb.weight_quantizer(lb.weight)
                assert not torch.equal(qa, qb), f"expert {e} {proj} kept its RTN weight"
    e_rtn, e_gptq = _error(rtn, ref), _error(gptq, ref)
    assert e_gptq < 0.8 * e_rtn, (e_gptq, e_rtn)


@pytest.mark.filterwarnings("ignore:gptq.*rank-deficient")  # 3 tokens: expected, and logged
@pytest.mark.parametrize(
    "algorithm", [{"method": "awq_lite"}, {"method": "smoothquant"}, {"method": "gptq"}]
)
def test_algorithms_cover_experts_the_router_never_picks(algorithm: dict[str, str]) -> None:
    model = with_outliers(qwen2_moe(num_experts=8, top_k=1, layers=1))
    ids = token_batches(1, 3, seed=4)[0][:1]  # 3 tokens, top-1: at most 3 of 8 experts hit
    cfg = (
        copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG)
        if algorithm["method"] == "smoothquant"
        else _int4(algorithm)
    )
    before = experts_of(model)[0].down_proj.detach().clone()
    mtq.quantize(model, cfg, lm_loop([ids]))
    (experts,) = experts_of(model)
    if algorithm["method"] != "gptq":
        assert all(_pre_scaled(model, "gate_up_proj"))
        assert all(_pre_scaled(model, "down_proj"))
    else:  # every expert's weights were updated, not only the routed ones
        changed = (experts.down_proj.detach() != before).flatten(1).any(dim=1)
        assert changed.all()
    for e in range(8):
        for proj in ("gate_up_proj", "down_proj"):
            wq = experts.expert(e).get_submodule(proj).weight_quantizer
            amax = wq[0].amax if isinstance(wq, nn.Sequential) else wq.amax
            assert torch.isfinite(amax).all()
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_auto_quantize_refuses_3d_experts_instead_of_skipping_them() -> None:
    model = qwen2_moe(num_experts=4, layers=1)
    with pytest.raises(ValueError, match="3-D MoE experts"):
        mtq.auto_quantize(
            model,
            constraints={"effective_bits": 6.0},
            quantization_formats=[mtq.FP8_DEFAULT_CFG],
            data_loader=CALIB[:1],
            forward_step=lambda m, b: m(input_ids=b),
            loss_func=lambda out, _b: out.logits.square().mean(),
            num_calib_steps=1,
            num_score_steps=1,
        )
    assert not is_quantized(model)  # refused before anything was converted
