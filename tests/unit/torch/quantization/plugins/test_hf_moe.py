"""transformers-5 MoE experts stored as 3-D weights get per-expert quantizers (plugins/hf_moe)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modeloptim.torch.opt as mto
import modeloptim.torch.quantization as mtq

from ._hf_moe import experts_of, family_model, lm_loop, one_thread, qwen2_moe, token_batches

transformers = pytest.importorskip("transformers")

from modeloptim.torch.quantization.algorithms.quant_utils import full_precision  # noqa: E402
from modeloptim.torch.quantization.plugins.hf_moe import (  # noqa: E402
    QuantHFMoEExperts,
    fuse_unfused_expert_weights,
    is_hf_experts,
    register_hf_moe_experts,
)

__all__ = ["one_thread"]  # the autouse fixture

FAMILIES = ["qwen2_moe", "qwen3_moe", "mixtral", "olmoe", "gpt_oss"]
OFF = {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": None}


class _Holder(nn.Module):
    """Calls a bare experts module the way its MoE block does."""

    def __init__(self, experts: nn.Module) -> None:
        super().__init__()
        self.experts = experts

    def forward(self, h: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.experts(h, idx, w)


def _experts_and_routing(
    tokens: int = 24, seed: int = 0
) -> tuple[_Holder, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = qwen2_moe(num_experts=6, seed=seed, layers=1)
    experts = experts_of(model)[0]
    g = torch.Generator().manual_seed(seed + 1)
    h = torch.randn(tokens, 64, generator=g)
    idx = torch.rand(tokens, 6, generator=g).topk(2, dim=-1).indices
    w = torch.softmax(torch.randn(tokens, 2, generator=g), dim=-1)
    return _Holder(experts), h, idx, w


def _fp8_qdq(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """DESIGN.md §2 FP8 E4M3 fake quantization, written out (float32, as specified)."""
    scale = 448.0 / amax.float()
    q = (x.float() * scale).clamp(-448, 448).to(torch.float8_e4m3fn).float()
    return q / scale


def _int4_block_qdq(w: torch.Tensor, block: int) -> torch.Tensor:
    """INT4 per-block (along the input dim) fake quantization, from the block's own max."""
    rows, cols = w.shape
    b = w.float().reshape(rows, cols // block, block)
    scale = 7.0 / b.abs().amax(-1, keepdim=True)
    q = torch.round(b * scale).clamp(-7, 7)  # torch.round: half to even
    return (q / scale).reshape(rows, cols)


def _route64(h, idx, w, expert_fn) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Float64 routing: sum over each token's experts of weight * expert_fn(e, x)."""
    out = torch.zeros(h.shape, dtype=torch.float64)
    for t in range(h.shape[0]):
        for k in range(idx.shape[1]):
            out[t] += w[t, k].double() * expert_fn(int(idx[t, k]), h[t : t + 1])[0]
    return out


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_detected_and_quantized_per_expert(family: str) -> None:
    model = family_model(family)
    ref = copy.deepcopy(model)
    names = register_hf_moe_experts(model)
    assert len(names) == 1
    assert names[0].endswith("Experts")
    ids = token_batches(2, 12, seed=3, vocab=64)
    mtq.quantize(model, copy.deepcopy(mtq.FP8_DEFAULT_CFG), lm_loop(ids))
    (experts,) = experts_of(model)
    assert isinstance(experts, QuantHFMoEExperts)
    first = "gate_up_proj"
    for e in range(4):
        for proj in (first, "down_proj"):
            layer = experts.expert(e).get_submodule(proj)
            wq, iq = layer.weight_quantizer, layer.input_quantizer
            assert wq.is_enabled
            assert iq.is_enabled
            # Each expert's own per-tensor amax: the max of *its* [out, in] slice.
            stored = getattr(experts, proj)[e]
            assert torch.equal(wq.amax, stored.detach().abs().amax())
            assert torch.isfinite(iq.amax).all()
            assert iq.amax > 0
    with torch.no_grad():
        q_out, f_out = model(input_ids=ids[0]).logits, ref(input_ids=ids[0]).logits
    rel = ((q_out - f_out).norm() / f_out.norm()).item()
    assert 0 < rel < 0.15  # quantized (not identical), and near the float model (FP8)


@pytest.mark.parametrize("family", FAMILIES)
def test_quantized_forward_equals_original_with_quantizers_off(family: str) -> None:
    model = family_model(family)
    ref = copy.deepcopy(model)
    mtq.quantize(model, copy.deepcopy(OFF))
    assert isinstance(experts_of(model)[0], QuantHFMoEExperts)
    ids = token_batches(1, 16, seed=5, vocab=64)[0]
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids).logits, ref(input_ids=ids).logits, rtol=1e-6, atol=1e-6
        )


class _ThreeD(nn.Module):
    def __init__(self, up_out: int = 16, down_in: int = 8, n: int = 2) -> None:
        super().__init__()
        self.num_experts = n
        self.gate_up_proj = nn.Parameter(torch.randn(n, up_out, 4))
        self.down_proj = nn.Parameter(torch.randn(n, 4, down_in))

    def forward(self, hidden_states, top_k_index, top_k_weights):  # type: ignore[no-untyped-def]
        return hidden_states


class _OneArg(_ThreeD):
    def forward(self, hidden_states):  # type: ignore[no-untyped-def]
        return hidden_states


def test_detection_is_structural() -> None:
    assert is_hf_experts(_ThreeD())  # any class with the contract, whatever its name
    assert not is_hf_experts(_ThreeD(up_out=16, down_in=6))  # widths do not chain
    assert not is_hf_experts(_OneArg())  # no routing arguments
    assert not is_hf_experts(nn.Linear(4, 4))
    mlp = transformers.models.qwen2_moe.modeling_qwen2_moe.Qwen2MoeMLP(
        qwen2_moe(layers=1).config, intermediate_size=8
    )
    assert not is_hf_experts(mlp)  # 2-D linear layers, handled as nn.Linear


def test_config_patterns_reach_expert_quantizers() -> None:
    model = qwen2_moe(num_experts=4)
    mtq.quantize(model, copy.deepcopy(OFF))
    n = 2 * 4  # layers * experts
    # ModelOpt's plural name is an alias of the same quantizers (test_hf_moe_aliases.py)
    assert mtq.enable_quantizer(model, "*experts*weight_quantizers*") == 2 * n
    assert mtq.disable_quantizer(model, "*experts*weight_quantizers*") == 2 * n
    assert mtq.enable_quantizer(model, "*experts*weight_quantizer") == 2 * n
    assert mtq.disable_quantizer(model, "*gate_up_proj*") == 3 * n  # input, weight, output
    assert mtq.enable_quantizer(model, "*experts.3.down_proj.input_quantizer") == 2
    e3 = experts_of(model)[0].expert(3)
    assert e3.down_proj.input_quantizer.is_enabled
    assert not e3.gate_up_proj.weight_quantizer.is_enabled
    assert e3.down_proj.weight_quantizer.is_enabled


# --------------------------------------------------------------------------- calibration


def test_unrouted_experts_are_calibrated_on_all_tokens_and_output_is_unchanged() -> None:
    model = qwen2_moe(num_experts=8, top_k=1, layers=1)
    ref = copy.deepcopy(model)
    ids = token_batches(1, 2, seed=7)[0][:1]  # 2 tokens, top-1: at most 2 of 8 experts hit
    (experts,) = experts_of(model)
    seen: dict[str, torch.Tensor] = {}

    def grab(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen["h"], seen["idx"] = args[0].detach().clone(), args[1].detach().clone()

    handle = experts.register_forward_pre_hook(grab)
    with torch.no_grad():
        ref_logits = ref(input_ids=ids).logits
        model(input_ids=ids)
    handle.remove()
    unrouted = sorted(set(range(8)) - set(seen["idx"].flatten().tolist()))
    assert len(unrouted) >= 6

    during: list[torch.Tensor] = []

    def loop(m: nn.Module) -> None:
        during.append(m(input_ids=ids).logits)

    mtq.quantize(model, copy.deepcopy(mtq.FP8_DEFAULT_CFG), loop)
    torch.testing.assert_close(during[0], ref_logits, rtol=0, atol=1e-6)
    h64 = seen["h"].double()
    for e in range(8):
        box = experts.expert(e)
        for proj in ("gate_up_proj", "down_proj"):
            for q in (
                box.get_submodule(proj).input_quantizer,
                box.get_submodule(proj).weight_quantizer,
            ):
                assert q.amax is not None
                assert torch.isfinite(q.amax).all()
                assert q.amax > 0
        # Independent reference: what each expert reads when it runs on every token.
        assert torch.equal(box.gate_up_proj.input_quantizer.amax, seen["h"].abs().amax())
        gate, up = (h64 @ experts.gate_up_proj[e].detach().double().T).chunk(2, dim=-1)
        act = F.silu(gate) * up
        torch.testing.assert_close(
            box.down_proj.input_quantizer.amax.double(), act.abs().amax(), rtol=1e-5, atol=0
        )


# --------------------------------------------------------------------------- numerics


def test_fp8_experts_match_float64_reference() -> None:
    holder, h, idx, w = _experts_and_routing()
    experts = holder.experts
    weights = {p: getattr(experts, p).detach().clone() for p in ("gate_up_proj", "down_proj")}
    mtq.quantize(holder, copy.deepcopy(mtq.FP8_DEFAULT_CFG), lambda m: m(h, idx, w))

    def expert64(e: int, x: torch.Tensor) -> torch.Tensor:
        box = experts.expert(e)
        wgu = _fp8_qdq(weights["gate_up_proj"][e], weights["gate_up_proj"][e].abs().amax())
        wd = _fp8_qdq(weights["down_proj"][e], weights["down_proj"][e].abs().amax())
        xq = _fp8_qdq(x, box.gate_up_proj.input_quantizer.amax)
        gate, up = (xq.double() @ wgu.double().T).chunk(2, dim=-1)
        act = F.silu(gate) * up
        aq = _fp8_qdq(act.float(), box.down_proj.input_quantizer.amax)
        return aq.double() @ wd.double().T

    ref64 = _route64(h, idx, w, expert64)
    with torch.no_grad():
        out = holder(h, idx, w)
    torch.testing.assert_close(out.double(), ref64, rtol=1e-4, atol=2e-6)
    # The tolerance is far below the quantization error: the check would see a wrong scale.
    with torch.no_grad(), full_precision(holder):
        plain = holder(h, idx, w)
    assert (plain.double() - ref64).abs().max() > 50 * 2e-6


def test_int4_block_experts_match_float64_reference() -> None:
    holder, h, idx, w = _experts_and_routing(seed=1)
    experts = holder.experts
    weights = {p: getattr(experts, p).detach().clone() for p in ("gate_up_proj", "down_proj")}
    cfg = copy.deepcopy(mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG)
    cfg["quant_cfg"][0]["cfg"]["block_sizes"] = {-1: 16, "type": "static"}
    mtq.quantize(holder, cfg, lambda m: m(h, idx, w))
    box = experts.expert(2)
    assert box.gate_up_proj.weight_quantizer.amax.numel() == 64 * (64 // 16)  # per expert row/block
    assert not box.gate_up_proj.input_quantizer.is_enabled

    def expert64(e: int, x: torch.Tensor) -> torch.Tensor:
        wgu = _int4_block_qdq(weights["gate_up_proj"][e], 16).double()
        wd = _int4_block_qdq(weights["down_proj"][e], 16).double()
        gate, up = (x.double() @ wgu.T).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ wd.T

    ref64 = _route64(h, idx, w, expert64)
    with torch.no_grad():
        out = holder(h, idx, w)
    torch.testing.assert_close(out.double(), ref64, rtol=1e-5, atol=1e-6)
    with torch.no_grad(), full_precision(holder):
        plain = holder(h, idx, w)
    assert (plain.double() - ref64).abs().max() > 100 * 1e-6


@pytest.mark.parametrize(
    "preset", ["NVFP4_DEFAULT_CFG", "MXFP8_DEFAULT_CFG", "INT8_DEFAULT_CFG", "W4A8_AWQ_BETA_CFG"]
)
def test_every_preset_quantizes_every_expert(preset: str) -> None:
    model = qwen2_moe(num_experts=4, layers=1)
    ref = copy.deepcopy(model)
    ids = token_batches(2, 16, seed=11)
    mtq.quantize(model, copy.deepcopy(mtq.PRESETS[preset]), lm_loop(ids))
    (experts,) = experts_of(model)
    for e in range(4):
        for proj in ("gate_up_proj", "down_proj"):
            wq = experts.expert(e).get_submodule(proj).weight_quantizer
            assert wq.is_enabled
    with torch.no_grad():
        q_out, f_out = model(input_ids=ids[0]).logits, ref(input_ids=ids[0]).logits
        before = {e: experts.expert(e).gate_up_proj.weight for e in range(4)}
        # the quantized expert weight differs from the stored one (it is really quantized)
        wq0 = experts.expert(0).gate_up_proj.weight_quantizer(before[0])
    assert not torch.equal(wq0, before[0])
    rel = ((q_out - f_out).norm() / f_out.norm()).item()
    assert 0 < rel < 0.2


def test_save_restore_gives_identical_outputs(tmp_path: Path) -> None:
    model = qwen2_moe(num_experts=4)
    ids = token_batches(2, 16, seed=13)
    mtq.quantize(model, copy.deepcopy(mtq.NVFP4_DEFAULT_CFG), lm_loop(ids))
    mto.save(model, tmp_path / "moe.pt")
    fresh = qwen2_moe(num_experts=4, seed=99)  # other weights: all must come from the file
    mto.restore(fresh, tmp_path / "moe.pt")
    assert isinstance(experts_of(fresh)[0], QuantHFMoEExperts)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids[1]).logits, model(input_ids=ids[1]).logits)
    a = experts_of(model)[1].expert(2).down_proj.input_quantizer.amax
    b = experts_of(fresh)[1].expert(2).down_proj.input_quantizer.amax
    assert torch.equal(a, b)


def test_gradients_reach_the_3d_parameters_and_fold_weight_writes_them() -> None:
    model = qwen2_moe(num_experts=4, layers=1)
    ids = token_batches(1, 16, seed=17)
    mtq.quantize(model, copy.deepcopy(mtq.INT8_DEFAULT_CFG), lm_loop(ids))
    (experts,) = experts_of(model)
    model(input_ids=ids[0]).logits.square().mean().backward()  # QAT: straight-through
    grad = experts.gate_up_proj.grad
    assert grad is not None
    assert (grad.flatten(1).abs().amax(dim=1) > 0).any()
    with torch.no_grad():
        before = model(input_ids=ids[0]).logits
        expected = experts.expert(2).down_proj.weight_quantizer(experts.down_proj[2].clone())
    assert mtq.fold_weight(model) > 8  # 4 experts x 2 projections + the other linears
    torch.testing.assert_close(experts.down_proj[2].detach(), expected, rtol=0, atol=0)
    assert not experts.expert(2).down_proj.weight_quantizer.is_enabled
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids[0]).logits, before, rtol=1e-5, atol=1e-5)


def test_compress_refuses_experts_before_changing_anything() -> None:
    model = qwen2_moe(num_experts=4, layers=1)
    ids = token_batches(1, 16, seed=19)
    mtq.quantize(model, copy.deepcopy(mtq.FP8_DEFAULT_CFG), lm_loop(ids))
    with torch.no_grad():
        before = model(input_ids=ids[0]).logits
    with pytest.raises(ValueError, match="3-D MoE experts"):
        mtq.compress(model)
    from modeloptim.torch.quantization.compress import is_compressed

    assert not any(is_compressed(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids[0]).logits, before)


def test_hf_save_pretrained_round_trip(tmp_path: Path) -> None:
    mto.enable_huggingface_checkpointing()
    model = qwen2_moe(num_experts=4, layers=1)
    ids = token_batches(2, 16, seed=23)
    mtq.quantize(model, copy.deepcopy(mtq.FP8_DEFAULT_CFG), lm_loop(ids))
    model.save_pretrained(tmp_path / "hf")  # transformers 5 writes the experts unfused
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert isinstance(experts_of(loaded)[0], QuantHFMoEExperts)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids[1]).logits, model(input_ids=ids[1]).logits)


def test_fuse_unfused_expert_weights_inverts_the_per_expert_layout() -> None:
    model = family_model("gpt_oss")  # transposed, interleaved gate/up, biases
    mtq.quantize(model, copy.deepcopy(OFF))
    (experts,) = experts_of(model)
    name = "model.layers.0.mlp.experts"
    sd: dict[str, torch.Tensor] = {"other": torch.ones(1)}
    for e in range(4):  # the per-expert [out, in] layout, written out by hand
        w = experts.gate_up_proj[e].detach().T
        sd[f"{name}.{e}.gate_proj.weight"], sd[f"{name}.{e}.up_proj.weight"] = w[0::2], w[1::2]
        b = experts.gate_up_proj_bias[e].detach()
        sd[f"{name}.{e}.gate_proj.bias"], sd[f"{name}.{e}.up_proj.bias"] = b[0::2], b[1::2]
        sd[f"{name}.{e}.down_proj.weight"] = experts.down_proj[e].detach().T
        sd[f"{name}.{e}.down_proj.bias"] = experts.down_proj_bias[e].detach()
    fused = fuse_unfused_expert_weights(model, sd)
    assert set(fused) == {
        "other",
        *(
            f"{name}.{p}"
            for p in ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias")
        ),
    }
    for p in ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias"):
        assert torch.equal(fused[f"{name}.{p}"], getattr(experts, p).detach())
