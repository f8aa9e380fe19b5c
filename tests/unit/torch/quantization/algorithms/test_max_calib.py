"""Algorithm "max": weights from the stored weights, activations over every batch."""

from __future__ import annotations

import torch
from torch import nn

import modeloptim.torch.quantization as mtq


def test_amax_is_running_max_over_batches_in_full_precision():
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))
    batches = [torch.randn(4, 6) * s for s in (0.5, 3.0, 1.0)]
    with torch.no_grad():
        hidden = [torch.tanh(model[0](b)) for b in batches]
    w0 = model[0].weight.detach().clone()
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, lambda m: [m(b) for b in batches])
    torch.testing.assert_close(
        model[0].input_quantizer.amax, torch.stack([b.abs().amax() for b in batches]).amax()
    )
    # second layer's inputs are the *float* activations (quantization paused while calibrating)
    torch.testing.assert_close(
        model[2].input_quantizer.amax, torch.stack([h.abs().amax() for h in hidden]).amax()
    )
    torch.testing.assert_close(model[0].weight_quantizer.amax, w0.abs().amax(1, keepdim=True))
    for q in (model[0].input_quantizer, model[0].weight_quantizer):
        assert q._if_quant
        assert not q._if_calib


def test_weight_only_needs_no_forward_loop_and_block_amax_shape():
    model = nn.Sequential(nn.Linear(300, 7))
    w = model[0].weight.detach().clone()
    mtq.quantize(model, mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG)
    amax = model[0].weight_quantizer.amax
    # 300 columns -> 3 blocks of 128 (last one zero-padded): one amax per (row, block)
    assert amax.shape == (21, 1)
    padded = torch.nn.functional.pad(w, (0, 84)).reshape(7, 3, 128)
    torch.testing.assert_close(amax.reshape(7, 3), padded.abs().amax(-1), rtol=0, atol=0)


def test_unused_layer_keeps_no_amax_without_crashing_calibration():
    class TwoBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 3)
            self.unused = nn.Linear(3, 3)

        def forward(self, x):
            return self.used(x)

    model = TwoBranch()
    mtq.quantize(model, mtq.FP8_DEFAULT_CFG, lambda m: m(torch.randn(2, 3)))
    assert model.used.input_quantizer.amax is not None
    assert model.unused.input_quantizer.amax is None
    assert model.unused.weight_quantizer.amax is not None  # weights calibrate from the weight


def test_algorithm_none_keeps_quantizers_uncalibrated():
    model = nn.Sequential(nn.Linear(3, 3))
    calls = []
    cfg = mtq.get_preset("INT8_DEFAULT_CFG")
    cfg["algorithm"] = None
    mtq.quantize(model, cfg, lambda m: calls.append(1))
    assert calls == []
    assert model[0].weight_quantizer.amax is None
    assert model[0].weight_quantizer.is_enabled


def test_weight_only_config_does_not_run_the_forward_loop():
    model = nn.Sequential(nn.Linear(4, 4))
    calls = []
    mtq.quantize(model, mtq.INT8_WEIGHT_ONLY_CFG, lambda m: calls.append(m(torch.randn(2, 4))))
    assert calls == []
    assert model[0].weight_quantizer.amax is not None
    model2 = nn.Sequential(nn.Linear(4, 4))
    mtq.quantize(model2, mtq.INT8_DEFAULT_CFG, lambda m: calls.append(m(torch.randn(2, 4))))
    assert len(calls) == 1


def test_progress_counting_never_replaces_model_outputs(monkeypatch):
    # tqdm.update returns True whenever it redraws; a forward hook returning it would replace the
    # model's output seen by the user's forward_loop.
    import tqdm.auto

    import modeloptim.torch.quantization as mtq

    monkeypatch.setattr(tqdm.auto.tqdm, "update", lambda self, n=1: True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    seen = []
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, lambda m: seen.append(m(torch.randn(2, 4))))
    assert all(isinstance(o, torch.Tensor) and o.shape == (2, 4) for o in seen)
