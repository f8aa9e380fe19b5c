"""FP8_KV_CFG / NVFP4_KV_CFG applied on top of a weight/activation config (HF LLaMA)."""

from __future__ import annotations

import copy

import pytest
import torch

import modeloptim.torch.quantization as mtq

from .conftest import lm_loop, token_batches


def _with_kv(base, kv):
    cfg = copy.deepcopy(base)
    cfg["quant_cfg"] = [*cfg["quant_cfg"], *copy.deepcopy(kv["quant_cfg"])]
    return cfg


@pytest.mark.parametrize(
    ("kv_name", "fmt"), [("FP8_KV_CFG", "fp8_e4m3"), ("NVFP4_KV_CFG", "nvfp4")]
)
def test_kv_cache_on_top_of_fp8(tiny_llama, kv_name, fmt):
    batches = token_batches(2)
    plain = mtq.quantize(copy.deepcopy(tiny_llama), mtq.FP8_DEFAULT_CFG, lm_loop(batches))
    model = mtq.quantize(
        tiny_llama, _with_kv(mtq.FP8_DEFAULT_CFG, getattr(mtq, kv_name)), lm_loop(batches)
    )
    attn = model.model.layers[0].self_attn
    for q in (attn.k_bmm_quantizer, attn.v_bmm_quantizer):
        assert q.is_enabled
        assert q.format.name == fmt
    if fmt == "fp8_e4m3":
        assert float(attn.k_bmm_quantizer.amax) > 0  # calibrated on the keys
    # the base config still applies (the KV preset's "default: off" does not undo it)
    assert attn.q_proj.weight_quantizer.is_enabled
    assert attn.q_proj.input_quantizer.is_enabled
    out_kv = model(input_ids=batches[0]).logits
    out_plain = plain(input_ids=batches[0]).logits
    assert torch.isfinite(out_kv).all()
    assert not torch.equal(out_kv, out_plain)  # keys/values are really quantized
    # the KV quantization error is small relative to the logits
    assert (out_kv - out_plain).abs().max() < 0.5 * out_plain.abs().max()


def test_kv_cache_with_smoothquant(tiny_llama):
    batches = token_batches(2)
    model = mtq.quantize(
        tiny_llama, _with_kv(mtq.INT8_SMOOTHQUANT_CFG, mtq.FP8_KV_CFG), lm_loop(batches)
    )
    attn = model.model.layers[1].self_attn
    assert attn.v_bmm_quantizer.amax is not None
    assert torch.isfinite(model(input_ids=batches[0]).logits).all()
