"""Inference fast path of quantized ``nn.Linear`` inside ``cache_quantized_weights``.

The fast path must compute exactly what the generic path computes (input quantizer, cached
fake-quantized weight, ``F.linear``, output quantizer), and step aside whenever the generic
path's semantics could differ (gradients, extra arguments, custom forwards).
"""

import copy

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.nn.modules import quant_module as qm


@pytest.fixture
def fast_calls(monkeypatch):
    calls = []
    real = qm._linear_fast_forward
    monkeypatch.setattr(qm, "_linear_fast_forward", lambda *a: calls.append(1) or real(*a))
    return calls


def _model(cfg):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32, bias=False))
    data = [torch.randn(4, 64) for _ in range(2)]
    mtq.quantize(m, cfg, lambda mm: [mm(d) for d in data])
    return m


@pytest.mark.parametrize(
    "cfg",
    ["INT8_DEFAULT_CFG", "FP8_DEFAULT_CFG", "NVFP4_DEFAULT_CFG", "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"],
)
def test_fast_path_equals_generic_path(cfg, fast_calls):
    m = _model(cfg)
    x = torch.randn(5, 64)
    with torch.no_grad():
        generic = m(x)
        assert not fast_calls
        with mtq.cache_quantized_weights(m):
            first = m(x)
            second = m(x)  # from the cache
    assert len(fast_calls) == 4
    assert torch.equal(first, generic)
    assert torch.equal(second, generic)


def test_fast_path_sees_weight_and_amax_changes(fast_calls):
    m = _model("INT8_DEFAULT_CFG")
    x = torch.randn(3, 64)
    with torch.no_grad(), mtq.cache_quantized_weights(m):
        before = m(x)
        m[0].weight.mul_(2.0)  # in place: the cached copy must be dropped
        m[0].weight_quantizer.amax = m[0].weight_quantizer.amax * 2.0
        after = m(x)
    with torch.no_grad():
        expect = m(x)
    assert fast_calls
    assert torch.equal(after, expect)
    assert not torch.equal(after, before)


def test_fast_path_not_used_with_grad_or_custom_forward(fast_calls):
    m = _model("INT8_DEFAULT_CFG")
    x = torch.randn(3, 64)
    with mtq.cache_quantized_weights(m):
        y = m(x)  # grad enabled: generic path (STE backward needs it)
    y.sum().backward()
    assert not fast_calls
    assert m[0].weight.grad is not None

    class Scaled(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 3.0

    from modeloptim.torch.quantization.nn.modules.quant_linear import QuantLinear

    mtq.QuantModuleRegistry.register({Scaled: "Scaled"})(QuantLinear)
    try:
        torch.manual_seed(1)
        s = nn.Sequential(Scaled(8, 4))
        ref = copy.deepcopy(s)
        mtq.quantize(s, "INT8_WEIGHT_ONLY_CFG")
        assert not qm._plain_linear(s[0])
        with torch.no_grad(), mtq.cache_quantized_weights(s):
            out = s(torch.ones(2, 8))
    finally:
        mtq.QuantModuleRegistry.unregister(Scaled)
    assert not fast_calls
    # the custom forward (x3) ran: INT8 weights keep the result within a few percent
    torch.testing.assert_close(out, ref(torch.ones(2, 8)), rtol=0.05, atol=0.05)
