"""gptq on models: exact re-quantization, per-layer gain over RTN on calibration inputs, errors."""

from __future__ import annotations

import copy

import pytest
import torch

import modeloptim.torch.quantization as mtq

from .conftest import lm_loop, token_batches


def _cfg(preset="INT4_BLOCKWISE_WEIGHT_ONLY_CFG", block=16, **algo):
    cfg = copy.deepcopy(getattr(mtq, preset))
    if block:
        cfg["quant_cfg"][0]["cfg"]["block_sizes"] = {-1: block, "type": "static"}
    cfg["algorithm"] = {"method": "gptq", **algo}
    return cfg


def _capture_inputs(model, batches, names):
    xs = {n: [] for n in names}
    hs = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda _m, a, n=n: xs[n].append(a[0].detach().reshape(-1, a[0].shape[-1]))
        )
        for n in names
    ]
    with torch.no_grad():
        lm_loop(batches)(model)
    for h in hs:
        h.remove()
    return {n: torch.cat(v) for n, v in xs.items()}


@pytest.mark.parametrize(
    ("preset", "block", "act_order"),
    [
        ("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", 16, False),
        ("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", 16, True),
        ("W4A16_NVFP4_CFG", None, False),
    ],
)
def test_gptq_layers_beat_rtn_on_calibration_inputs(tiny_llama, preset, block, act_order):
    batches = token_batches(4, seq=32)
    names = [
        n
        for n, m in tiny_llama.named_modules()
        if isinstance(m, torch.nn.Linear) and n != "lm_head"
    ]
    xs = _capture_inputs(tiny_llama, batches, names)
    w_fp = {n: tiny_llama.get_submodule(n).weight.detach().clone() for n in names}
    rtn = copy.deepcopy(tiny_llama)
    cfg_rtn = _cfg(preset, block)
    cfg_rtn["algorithm"] = "max"
    mtq.quantize(rtn, cfg_rtn, lm_loop(batches))
    mtq.quantize(tiny_llama, _cfg(preset, block, act_order=act_order), lm_loop(batches))
    wins = 0
    for n in names:
        layer = tiny_llama.get_submodule(n)
        w = layer.weight.detach()
        # the stored weight is on the grid: fake quantization reproduces it exactly
        torch.testing.assert_close(layer.weight_quantizer(w), w, rtol=0, atol=0)
        rl = rtn.get_submodule(n)
        w_rtn = rl.weight_quantizer(rl.weight.detach())
        x = xs[n]
        err = (x @ (w_fp[n] - w).T).pow(2).sum()
        err_rtn = (x @ (w_fp[n] - w_rtn).T).pow(2).sum()
        wins += int(err < err_rtn)
    assert wins == len(names)


def test_gptq_deterministic(tiny_llama):
    batches = token_batches(2)
    states = []
    for _ in range(2):
        m = copy.deepcopy(tiny_llama)
        mtq.quantize(m, _cfg(), lm_loop(batches))
        states.append(m.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=0, atol=0, msg=k)


def test_gptq_small_calibration_warns(tiny_llama):
    with pytest.warns(UserWarning, match="rank-deficient"):
        mtq.quantize(tiny_llama, _cfg(), lm_loop(token_batches(1, seq=4)))


def test_gptq_unsupported_weight_format_leaves_model_unchanged(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    cfg = copy.deepcopy(mtq.W4A8_AWQ_BETA_CFG)  # SequentialQuantizer weights
    cfg["algorithm"] = "gptq"
    with pytest.raises(NotImplementedError, match="gptq"):
        mtq.quantize(tiny_llama, cfg, lm_loop(token_batches(1)))
    assert not any(hasattr(m, "weight_quantizer") for m in tiny_llama.modules())
    for k, v in tiny_llama.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", ["gptq", "awq_full", "awq_lite"])
def test_width_not_multiple_of_block(algorithm):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 24), torch.nn.GELU(), torch.nn.Linear(24, 10))
    data = [torch.randn(32, 40) for _ in range(3)]
    cfg = _cfg(block=16)  # 40 and 24 are not multiples of 16: the last block is padded
    cfg["algorithm"] = {"method": algorithm}
    mtq.quantize(model, cfg, lambda m: [m(x) for x in data])
    assert model[0].weight_quantizer.amax.numel() == 24 * 3
    out = model(torch.cat(data))
    assert torch.isfinite(out).all()
    if algorithm == "gptq":
        w = model[0].weight.detach()
        torch.testing.assert_close(model[0].weight_quantizer(w), w, rtol=0, atol=0)
