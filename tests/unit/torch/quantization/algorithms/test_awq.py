"""awq_lite / awq_clip / awq_full on models: gains over RTN, shared scales, formats, determinism."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.nn import SequentialQuantizer

from .conftest import lm_loop, token_batches


def _int4(algorithm, block=16):
    cfg = copy.deepcopy(mtq.INT4_AWQ_CFG)
    cfg["quant_cfg"][0]["cfg"]["block_sizes"] = {-1: block, "type": "static"}
    cfg["algorithm"] = algorithm
    return cfg


class FanOut(nn.Module):
    """A group whose shared input comes from a functional op (nothing to fold into)."""

    def __init__(self, d=32):
        super().__init__()
        self.first = nn.Linear(d, d)
        self.left = nn.Linear(d, d)
        self.right = nn.Linear(d, d)

    def forward(self, x):
        h = torch.tanh(self.first(x)) * 3
        return self.left(h) + self.right(h)


def _outlier_data(d=32, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.ones(d)
    scale[[2, 9]] = 20.0
    return [torch.randn(64, d, generator=g) * scale for _ in range(n)]


@pytest.mark.parametrize("method", ["awq_lite", "awq_full", "awq_clip"])
def test_awq_beats_rtn_on_outlier_activations(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
    data = _outlier_data()
    x = torch.cat(data)
    ref = model(x)
    rtn = mtq.quantize(copy.deepcopy(model), _int4("max"), lambda m: [m(b) for b in data])
    mtq.quantize(model, _int4({"method": method}), lambda m: [m(b) for b in data])
    err = (model(x) - ref).pow(2).mean()
    err_rtn = (rtn(x) - ref).pow(2).mean()
    assert err < 0.9 * err_rtn


def test_group_without_producer_shares_one_pre_quant_scale():
    torch.manual_seed(0)
    model = FanOut()
    data = _outlier_data()
    mtq.quantize(model, _int4({"method": "awq_lite"}), lambda m: [m(b) for b in data])
    pl = model.left.input_quantizer.pre_quant_scale
    pr = model.right.input_quantizer.pre_quant_scale
    assert pl is not None
    torch.testing.assert_close(pl, pr, rtol=0, atol=0)
    # weight-only: the input quantizer only applies the scale (no activation quantization)
    x = torch.randn(5, 32)
    torch.testing.assert_close(model.left.input_quantizer(x), x * pl)


def test_awq_on_unusual_names_folds_into_custom_norm(weird_net):
    data = [torch.randn(4, 8, 16) for _ in range(3)]
    hub_before = weird_net.hub.weight.detach().clone()
    mtq.quantize(weird_net, _int4({"method": "awq_lite"}), lambda m: [m(b) for b in data])
    report = {tuple(r["layers"]): r for r in weird_net.__dict__["_awq_lite_report"]}
    spokes = report[("spoke_a", "spoke_b")]
    if spokes["alpha"] is not None:  # a scale was applied: folded into the custom RMS norm
        assert spokes["applied"] == "folded into hub"
        assert not torch.equal(weird_net.hub.weight, hub_before)
        assert weird_net.spoke_a.input_quantizer.pre_quant_scale is None
    for r in report.values():
        assert min(r["scale"].shape) > 0


@pytest.mark.parametrize(
    "preset",
    ["NVFP4_AWQ_LITE_CFG", "NVFP4_AWQ_CLIP_CFG", "NVFP4_AWQ_FULL_CFG", "W4A8_AWQ_BETA_CFG"],
)
def test_awq_presets_on_llama(tiny_llama, preset):
    batches = token_batches(2)
    cfg = copy.deepcopy(getattr(mtq, preset))
    if isinstance(cfg["algorithm"], dict):
        cfg["algorithm"] = {**cfg["algorithm"], "max_tokens": 64}
    else:
        cfg["algorithm"] = {"method": cfg["algorithm"], "max_tokens": 64}
    if preset.startswith("NVFP4_AWQ_FULL") or preset.startswith("NVFP4_AWQ_CLIP"):
        cfg["algorithm"]["clip_steps"] = 2
    mtq.quantize(tiny_llama, cfg, lm_loop(batches))
    out = tiny_llama(input_ids=batches[0]).logits
    assert torch.isfinite(out).all()
    down = tiny_llama.model.layers[0].mlp.down_proj
    if preset.startswith("W4A8"):
        assert isinstance(down.weight_quantizer, SequentialQuantizer)
        assert all(q.amax is not None for q in down.weight_quantizer.quantizers())
        assert down.input_quantizer.amax is not None  # FP8 input calibrated after scaling


def test_awq_is_deterministic(tiny_llama):
    batches = token_batches(2)
    states = []
    for _ in range(2):
        m = copy.deepcopy(tiny_llama)
        mtq.quantize(m, _int4({"method": "awq_full", "max_tokens": 48}), lm_loop(batches))
        states.append(m.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=0, atol=0, msg=k)


def test_awq_needs_forward_loop(tiny_llama):
    with pytest.raises(ValueError, match="forward_loop"):
        mtq.quantize(tiny_llama, _int4({"method": "awq_lite"}), None)
    assert not any(hasattr(m, "weight_quantizer") for m in tiny_llama.modules())


@pytest.mark.parametrize(
    ("preset", "algorithm"),
    [
        ("INT4_AWQ_CFG", "awq_lite"),
        ("NVFP4_AWQ_FULL_CFG", "awq_full"),
        ("INT8_SMOOTHQUANT_CFG", "smoothquant"),
        ("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "gptq"),
    ],
)
def test_algorithms_on_cnn_leave_convs_to_max_calibration(preset, algorithm):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 10 * 10, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    ).eval()
    data = [torch.randn(4, 3, 12, 12) for _ in range(2)]
    cfg = copy.deepcopy(getattr(mtq, preset))
    cfg["algorithm"] = {"method": algorithm}
    mtq.quantize(model, cfg, lambda m: [m(x) for x in data])
    assert model[0].weight_quantizer.is_enabled
    out = model(data[0])
    assert torch.isfinite(out).all()


def test_awq_lite_unusual_names_one_scale_per_group_exact_in_float():
    from modeloptim.torch.quantization.nn import TensorQuantizer

    from ...trace.shared_models import Unusual

    torch.manual_seed(0)
    model = Unusual()
    g = torch.Generator().manual_seed(7)
    data = [
        torch.randn(2, 6, 16, generator=g) * (1 + 10 * (torch.arange(16) == 4)) for _ in range(2)
    ]
    ref = [model(x) for x in data]
    mtq.quantize(model, _int4({"method": "awq_lite"}), lambda m: [m(b) for b in data])
    report = {tuple(sorted(r["layers"])): r for r in model.__dict__["_awq_lite_report"]}
    rep = report[("alpha", "heads.u", "heads.w", "zz.1")]
    assert rep["applied"] == "pre_quant_scale"  # zz.0 also feeds a row slice: no fold
    for m in [model.alpha, model.zz[1], model.heads["u"], model.heads["w"]]:
        torch.testing.assert_close(m.input_quantizer.pre_quant_scale, 1 / rep["scale"])
    for m in model.modules():
        if isinstance(m, TensorQuantizer):
            m.disable_quant()
    for x, r in zip(data, ref, strict=True):
        torch.testing.assert_close(model(x), r, rtol=1e-5, atol=1e-5)
