"""Fused-layer consistency: groups from a forward pass, one input scale and pre_quant_scale."""

import copy

import pytest
import torch
from safetensors.torch import load_file

from modeloptim.torch.export import export_hf_checkpoint, load_hf_checkpoint
from modeloptim.torch.export.fused import find_shared_input_groups, harmonize_groups
from modeloptim.torch.quantization.model_quant import quantize

from ._tiny import calib_ids, logits, preset, quantized, tiny_llama

pytestmark = pytest.mark.hf


def _run(m):
    m(input_ids=calib_ids())


def test_groups_come_from_the_tensors_not_the_names():
    model = quantized(tiny_llama(), preset("INT8_SMOOTHQUANT_CFG"))
    groups = find_shared_input_groups(model, _run)
    multi = sorted(sorted(g) for g in groups if len(g) > 1)
    expect = []
    for i in range(2):
        p = f"model.layers.{i}"
        expect.append([f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"])
        expect.append([f"{p}.self_attn.{x}_proj" for x in "kqv"])
    assert multi == sorted(expect)
    singles = {g[0] for g in groups if len(g) == 1}
    assert "model.layers.0.self_attn.o_proj" in singles
    assert "model.layers.1.mlp.down_proj" in singles


def test_export_unifies_input_scale_and_resmooths(tmp_path):
    torch.manual_seed(3)
    model = quantized(tiny_llama(), preset("INT8_SMOOTHQUANT_CFG"))
    attn = model.model.layers[0].self_attn
    scales = {}
    for x in "qkv":
        s = torch.rand(128) * 1.5 + 0.5
        scales[x] = s
        getattr(attn, f"{x}_proj").input_quantizer.pre_quant_scale = s
    attn.k_proj.input_quantizer.amax = attn.k_proj.input_quantizer.amax * 1.5
    w_before = {x: getattr(attn, f"{x}_proj")._parameters["weight"].detach().clone() for x in "qkv"}
    report = export_hf_checkpoint(model, tmp_path / "c")
    assert sorted(map(sorted, report.harmonized_groups)) == [
        [f"model.layers.0.self_attn.{x}_proj" for x in "kqv"]
    ]
    t = load_file(str(tmp_path / "c" / "model.safetensors"))
    p = "model.layers.0.self_attn"
    mean = (scales["q"] + scales["k"] + scales["v"]) / 3
    for x in "qkv":
        torch.testing.assert_close(t[f"{p}.{x}_proj.pre_quant_scale"], mean)
        torch.testing.assert_close(t[f"{p}.{x}_proj.input_scale"], t[f"{p}.k_proj.input_scale"])
    # the model was harmonized in place; the checkpoint reproduces it
    after = logits(model)
    torch.testing.assert_close(logits(load_hf_checkpoint(tmp_path / "c")), after, rtol=0, atol=1e-5)
    # re-smoothing keeps the float function: (x * s) @ W_i'^T == (x * s_i) @ W_i^T
    for x in "qkv":
        w_new = getattr(attn, f"{x}_proj")._parameters["weight"]
        torch.testing.assert_close(w_new * mean, w_before[x] * scales[x], rtol=1e-6, atol=1e-7)


def _unusual_quantized(cfg):
    from ..trace.shared_models import Unusual

    torch.manual_seed(0)
    model = Unusual()
    g = torch.Generator().manual_seed(5)
    scale = torch.ones(6, 16)
    scale[1:, [2, 9]] = 20.0  # row 0 (the only row heads.w reads) has no outliers
    data = [torch.randn(2, 6, 16, generator=g) * scale for _ in range(2)]
    quantize(model, cfg, lambda m: [m(x) for x in data])
    return model, data


def test_fused_groups_are_the_trace_groups_and_smoothquant_needs_no_harmonizing():
    from modeloptim.torch.quantization.config import presets

    model, data = _unusual_quantized(copy.deepcopy(presets.INT8_SMOOTHQUANT_CFG))
    groups = find_shared_input_groups(model, lambda m: m(data[0]))
    assert sorted(map(sorted, groups)) == [
        ["alpha", "heads.u", "heads.w", "zz.1"],
        ["omega"],
        ["tail"],
    ]
    # calibration already gave each group one input amax and one pre_quant_scale
    assert harmonize_groups(model, groups) == []
    # plain max calibration does not: heads.w saw only row 0, export must raise its amax
    plain, data = _unusual_quantized(copy.deepcopy(presets.INT8_DEFAULT_CFG))
    groups = find_shared_input_groups(plain, lambda m: m(data[0]))
    before = float(plain.heads["w"].input_quantizer.amax)
    assert harmonize_groups(plain, groups) == [["heads.u", "alpha", "zz.1", "heads.w"]]
    after = float(plain.heads["w"].input_quantizer.amax)
    assert after > before
    assert after == float(plain.alpha.input_quantizer.amax)
