"""HF checkpoints of models with 3-D MoE experts: per-expert unfused layers, exact reload."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq

from ._hf_moe import (
    experts_of,
    family_model,
    lm_loop,
    logits,
    one_thread,
    qwen2_moe,
    safetensors_in,
    token_batches,
)

pytest.importorskip("transformers")

from modeloptim.torch.export import export_hf_checkpoint, load_hf_checkpoint
from modeloptim.torch.export.packers import UnsupportedFormatError

__all__ = ["one_thread"]  # the autouse fixture

IDS = token_batches(2, 16, seed=21, vocab=64)
ALGOS = {
    "FP8_DEFAULT_CFG": "FP8",
    "NVFP4_DEFAULT_CFG": "NVFP4",
    "INT4_AWQ_CFG": "W4A16_AWQ",  # with its awq_lite: pre_quant_scale on every expert
    "W4A8_AWQ_BETA_CFG": "W4A8_AWQ",
    "INT8_SMOOTHQUANT_CFG": "W8A8_SQ_PER_CHANNEL",
    "MXFP8_DEFAULT_CFG": "MXFP8",
}


def _model(family: str) -> nn.Module:
    return qwen2_moe(num_experts=4) if family == "qwen2_moe" else family_model(family)


def _quantized(family: str, preset: str) -> nn.Module:
    return mtq.quantize(_model(family), copy.deepcopy(mtq.PRESETS[preset]), lm_loop(IDS))


def _logits(model: nn.Module) -> torch.Tensor:
    return logits(model, IDS[1])


def _fp8_qdq(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    scale = 448.0 / amax.float()
    return (x.float() * scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() / scale


@pytest.mark.parametrize(
    ("family", "preset"),
    [("qwen2_moe", p) for p in ALGOS]
    + [
        ("gpt_oss", "FP8_DEFAULT_CFG"),
        ("gpt_oss", "INT4_AWQ_CFG"),
        ("mixtral", "NVFP4_DEFAULT_CFG"),
        ("qwen3_moe", "W4A8_AWQ_BETA_CFG"),
    ],
)
def test_roundtrip_is_exact_with_unfused_expert_names(
    tmp_path: Path, family: str, preset: str
) -> None:
    model = _quantized(family, preset)
    report = export_hf_checkpoint(model, tmp_path / "c")
    assert report.quant_algo == ALGOS[preset]
    loaded = load_hf_checkpoint(tmp_path / "c")
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    t = safetensors_in(tmp_path / "c")
    experts = [n for n, m in model.named_modules() if m in experts_of(model)]
    for name in experts:
        assert f"{name}.gate_up_proj" not in t  # no 3-D tensor: engines read per expert
        assert f"{name}.down_proj" not in t
        for e in range(4):
            for part in ("gate_proj", "up_proj", "down_proj"):
                assert f"{name}.{e}.{part}.weight" in t
                assert f"{name}.{e}.{part}.weight_scale" in t
            if preset not in ("INT4_AWQ_CFG", "MXFP8_DEFAULT_CFG"):  # no static input scale
                # one input scale for the fused gate/up (w13) of each expert
                assert torch.equal(
                    t[f"{name}.{e}.gate_proj.input_scale"], t[f"{name}.{e}.up_proj.input_scale"]
                )
        if f"{name}.0.down_proj.input_scale" in t:  # one w2 activation scale per MoE layer
            for e in range(1, 4):
                assert torch.equal(
                    t[f"{name}.{e}.down_proj.input_scale"], t[f"{name}.0.down_proj.input_scale"]
                )
    hfq = json.loads((tmp_path / "c" / "hf_quant_config.json").read_text())["quantization"]
    assert not any("experts" in m for m in hfq["exclude_modules"])


@pytest.mark.parametrize("family", ["qwen2_moe", "gpt_oss"])
def test_fp8_expert_tensors_decode_by_hand(tmp_path: Path, family: str) -> None:
    model = _quantized(family, "FP8_DEFAULT_CFG")
    experts = experts_of(model)[0]
    name = next(n for n, m in model.named_modules() if m is experts)
    raw = {p: getattr(experts, p).detach().clone() for p in ("gate_up_proj", "down_proj")}
    bias = experts._parameters.get("gate_up_proj_bias")
    export_hf_checkpoint(model, tmp_path / "c")
    t = safetensors_in(tmp_path / "c")
    for e in range(4):
        # [out, in] of this expert, by hand from the stored layout
        w = raw["gate_up_proj"][e].T if family == "gpt_oss" else raw["gate_up_proj"][e]
        rows = (
            {"gate_proj": w[0::2], "up_proj": w[1::2]}
            if family == "gpt_oss"
            else {"gate_proj": w[: w.shape[0] // 2], "up_proj": w[w.shape[0] // 2 :]}
        )
        amax = w.abs().amax()  # one per-tensor amax for the fused gate/up of expert e
        for part, wp in rows.items():
            key = f"{name}.{e}.{part}"
            assert t[f"{key}.weight"].dtype == torch.float8_e4m3fn
            decoded = t[f"{key}.weight"].float() * t[f"{key}.weight_scale"].float()
            torch.testing.assert_close(decoded, _fp8_qdq(wp, amax), rtol=1e-6, atol=0)
            if bias is not None:
                sl = slice(0, None, 2) if part == "gate_proj" else slice(1, None, 2)
                assert torch.equal(t[f"{key}.bias"], bias[e, sl].detach())
        assert torch.equal(
            t[f"{name}.{e}.gate_proj.weight_scale"], t[f"{name}.{e}.up_proj.weight_scale"]
        )
        iq = experts.expert(e).gate_up_proj.input_quantizer
        torch.testing.assert_close(
            t[f"{name}.{e}.gate_proj.input_scale"].float(), iq.amax.float() / 448, rtol=1e-6, atol=0
        )


def test_unquantized_experts_are_written_in_float_and_excluded(tmp_path: Path) -> None:
    model = qwen2_moe(num_experts=4)
    cfg = copy.deepcopy(mtq.FP8_DEFAULT_CFG)
    cfg["quant_cfg"].append({"quantizer_name": "*layers.1.mlp.experts.*", "enable": False})
    mtq.quantize(model, cfg, lm_loop(IDS))
    report = export_hf_checkpoint(model, tmp_path / "c")
    p = "model.layers.1.mlp.experts"
    for e in range(4):
        for part in ("gate_proj", "up_proj", "down_proj"):
            assert f"{p}.{e}.{part}" in report.excluded
    t = safetensors_in(tmp_path / "c")
    raw = experts_of(model)[1].gate_up_proj.detach()
    assert torch.equal(t[f"{p}.2.up_proj.weight"], raw[2, 32:])
    assert t["model.layers.0.mlp.experts.2.up_proj.weight"].dtype == torch.float8_e4m3fn
    loaded = load_hf_checkpoint(tmp_path / "c")
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


def test_compressed_tensors_layout_is_refused_before_writing(tmp_path: Path) -> None:
    model = _quantized("qwen2_moe", "FP8_DEFAULT_CFG")
    with pytest.raises(UnsupportedFormatError, match="MoE experts"):
        export_hf_checkpoint(model, tmp_path / "c", layout="compressed-tensors")
    assert not (tmp_path / "c").exists()


def test_expert_smoothing_factors_are_unified_for_the_fused_kernel(tmp_path: Path) -> None:
    model = _quantized("qwen2_moe", "INT4_AWQ_CFG")
    experts = experts_of(model)[0]
    iq = experts.expert(1).gate_up_proj.input_quantizer
    before = _logits(model)
    with torch.no_grad():  # one expert with its own smoothing (same product x * s @ W^T)
        s = torch.linspace(0.5, 2.0, 64)
        experts.gate_up_proj[1].div_(s)
        iq.pre_quant_scale = iq.pre_quant_scale * s
    export_hf_checkpoint(model, tmp_path / "c")
    t = safetensors_in(tmp_path / "c")
    name = "model.layers.0.mlp.experts"
    first = t[f"{name}.0.gate_proj.pre_quant_scale"]
    for e in range(4):
        for part in ("gate_proj", "up_proj"):
            assert torch.equal(t[f"{name}.{e}.{part}.pre_quant_scale"], first)
    loaded = load_hf_checkpoint(tmp_path / "c")
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    # re-smoothing kept the model's function (up to INT4 re-rounding of one expert)
    assert ((_logits(model) - before).abs().max() / before.abs().max()).item() < 0.2
