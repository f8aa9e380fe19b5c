"""SmoothQuant: exact float equivalence, folding vs pre_quant_scale, and a W8A8 gain."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.algorithms.smoothquant import smooth_scale
from modeloptim.torch.quantization.nn import TensorQuantizer

from .conftest import lm_loop, token_batches


def _cfg(**algo):
    cfg = copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG)
    cfg["algorithm"] = {"method": "smoothquant", **algo}
    return cfg


def _float_view(model):
    """Quantization off but pre_quant_scale kept: the smoothed float model."""
    for m in model.modules():
        if isinstance(m, TensorQuantizer):
            m.disable_quant()


def test_smooth_scale_formula():
    a = torch.tensor([4.0, 1.0, 0.0, 9.0])
    w = torch.tensor([1.0, 4.0, 2.0, 0.0])
    s = smooth_scale(a, w, 0.5)
    torch.testing.assert_close(s, torch.tensor([2.0, 0.5, 1.0, 1.0]))


def test_llama_smoothing_is_exact_before_quantization(tiny_llama):
    batches = token_batches(3)
    ref = [tiny_llama(input_ids=b).logits for b in batches]
    ln_before = tiny_llama.model.layers[0].input_layernorm.weight.detach().clone()
    mtq.quantize(tiny_llama, _cfg(alpha=0.8), lm_loop(batches))
    layer = tiny_llama.model.layers[0]
    # q/k/v and gate/up scales were folded into the norms (no pre_quant_scale there) ...
    assert not torch.equal(layer.input_layernorm.weight, ln_before)
    assert layer.self_attn.q_proj.input_quantizer.pre_quant_scale is None
    # ... o_proj / down_proj read tensors no layer produced: pre_quant_scale, shared value
    assert layer.mlp.down_proj.input_quantizer.pre_quant_scale is not None
    _float_view(tiny_llama)
    for b, r in zip(batches, ref, strict=True):
        torch.testing.assert_close(tiny_llama(input_ids=b).logits, r, rtol=1e-5, atol=1e-5)


def test_model_without_norms_falls_back_to_pre_quant_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    x = torch.randn(32, 8) * torch.tensor([1, 1, 30, 1, 1, 1, 5, 1.0])
    ref = model(x)
    mtq.quantize(model, _cfg(), lambda m: m(x))
    for lin in (model[0], model[2]):
        assert lin.input_quantizer.pre_quant_scale is not None
    _float_view(model)
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_gpt2_conv1d_fold_is_exact(tiny_gpt2):
    batches = token_batches(2)
    ref = [tiny_gpt2(input_ids=b).logits for b in batches]
    mtq.quantize(tiny_gpt2, _cfg(), lm_loop(batches))
    _float_view(tiny_gpt2)
    for b, r in zip(batches, ref, strict=True):
        torch.testing.assert_close(tiny_gpt2(input_ids=b).logits, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("search", [False, True])
def test_smoothquant_beats_plain_w8a8_with_outliers(search):
    torch.manual_seed(0)
    d = 64
    model = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, d))
    with torch.no_grad():
        model[0].weight.mul_(torch.ones(d).index_fill_(0, torch.tensor([3, 40]), 60.0))
    x = torch.randn(256, d)
    ref = model(x)
    plain = copy.deepcopy(model)
    mtq.quantize(plain, mtq.INT8_DEFAULT_CFG, lambda m: m(x))
    mtq.quantize(model, _cfg(search_alpha=search), lambda m: m(x))
    err_plain = (plain(x) - ref).pow(2).mean()
    err_sq = (model(x) - ref).pow(2).mean()
    assert err_sq < 0.5 * err_plain


def _unusual_data():
    g = torch.Generator().manual_seed(5)
    scale = torch.ones(6, 16)
    scale[1:, [2, 9]] = 20.0  # row 0 (the only row heads.w reads) has no outliers
    return [torch.randn(2, 6, 16, generator=g) * scale for _ in range(3)]


def test_unusual_names_share_one_scale_and_one_input_amax():
    from ...trace.shared_models import Unusual

    torch.manual_seed(0)
    model = Unusual()
    data = _unusual_data()
    ref = [model(x) for x in data]
    mtq.quantize(model, _cfg(alpha=0.5, search_alpha=False), lambda m: [m(x) for x in data])
    members = [model.alpha, model.zz[1], model.heads["u"], model.heads["w"]]
    scales = [m.input_quantizer.pre_quant_scale for m in members]
    assert all(s is not None for s in scales)  # zz.0 also feeds a row slice: no fold
    for s in scales[1:]:
        torch.testing.assert_close(s, scales[0], rtol=0, atol=0)
    # one input amax per group: the max over the whole shared tensor (heads.w sees 1 row of 6)
    with torch.no_grad():
        h_amax = max(float((model.zz[0](x) * scales[0]).abs().max()) for x in data)
    for m in members:
        assert float(m.input_quantizer.amax) == pytest.approx(h_amax, rel=1e-6)
    # the residual also reads side's output: tail gets a pre_quant_scale, side is untouched
    assert model.tail.input_quantizer.pre_quant_scale is not None
    _float_view(model)
    for x, r in zip(data, ref, strict=True):
        torch.testing.assert_close(model(x), r, rtol=1e-5, atol=1e-5)
