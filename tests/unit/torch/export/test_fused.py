"""Fused-layer consistency: groups from a forward pass, one input scale and pre_quant_scale."""

import pytest
import torch
from safetensors.torch import load_file

from modeloptim.torch.export import export_hf_checkpoint, load_hf_checkpoint
from modeloptim.torch.export.fused import find_shared_input_groups

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
