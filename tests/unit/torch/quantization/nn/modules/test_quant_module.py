"""QuantModuleRegistry: built-in registrations, custom layers (both styles), export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.nn import (
    QuantLinearConvBase,
    QuantModule,
    QuantModuleRegistry,
    TensorQuantizer,
)


def _int8(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    scale = torch.div(torch.tensor(127.0), amax)  # IEEE division
    return torch.clamp(torch.round(x * scale), -127, 127) / scale


class MyLinear(nn.Module):
    """A user layer the registry does not know."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)

    def forward(self, x):
        return x @ self.weight.T


class QuantMyLinearModelOptStyle(MyLinear):
    """ModelOpt-documented style: subclass of the layer with _setup and explicit calls."""

    def _setup(self):
        self.input_quantizer = TensorQuantizer()
        self.weight_quantizer = TensorQuantizer({"num_bits": 8, "axis": 0})
        self.output_quantizer = TensorQuantizer()
        self.output_quantizer.disable()

    def forward(self, x):
        return self.output_quantizer(self.input_quantizer(x) @ self.weight_quantizer(self.weight).T)


class QuantMyLinearBase(QuantLinearConvBase):
    """Reusing the base: forward/weight handling come for free."""


@pytest.fixture
def registered():
    yield
    QuantModuleRegistry.unregister(MyLinear)


def test_builtin_registrations():
    for cls in (
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ConvTranspose3d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.InstanceNorm2d,
        nn.MaxPool2d,
        nn.AvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.LeakyReLU,
        nn.LSTM,
        nn.GRU,
        nn.RNN,
        nn.MultiheadAttention,
    ):
        assert cls in QuantModuleRegistry, cls
    assert QuantModuleRegistry.get_name(nn.BatchNorm2d) == "nn.BatchNorm2d"
    assert nn.ReLU not in QuantModuleRegistry


@pytest.mark.parametrize("wrapper", [QuantMyLinearModelOptStyle, QuantMyLinearBase])
def test_custom_registered_layer_is_quantized(registered, wrapper):
    mtq.QuantModuleRegistry.register({MyLinear: "MyLinear"})(wrapper)
    model = nn.Sequential(MyLinear(12, 6), nn.Linear(6, 3))
    w = model[0].weight.detach().clone()
    x_cal = torch.randn(16, 12)
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, lambda m: m(x_cal))
    layer = model[0]
    assert isinstance(layer, QuantModule)
    assert isinstance(layer, MyLinear)
    w_amax = w.abs().amax(dim=1, keepdim=True)
    torch.testing.assert_close(layer.weight_quantizer.amax, w_amax, rtol=0, atol=0)
    torch.testing.assert_close(layer.input_quantizer.amax, x_cal.abs().amax(), rtol=0, atol=0)
    x = torch.randn(4, 12)
    ref = (_int8(x, x_cal.abs().amax()).double() @ _int8(w, w_amax).double().T).float()
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-6)
    # weight found for calibration/folding in both styles
    assert [w for _, w in layer.weight_quantizer_pairs()] == [layer._parameters["weight"]]
    # export gives back the user's plain class with the same weight
    layer.export()
    assert type(layer) is MyLinear
    torch.testing.assert_close(layer(x), x @ w.T)


def test_register_rejects_bad_arguments():
    with pytest.raises(TypeError, match="cls_to_name"):
        QuantModuleRegistry.register([nn.Linear])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not an nn\.Module"):
        QuantModuleRegistry.register({int: "int"})  # type: ignore[dict-item]
    with pytest.raises(KeyError, match="ReLU"):
        QuantModuleRegistry.convert(nn.ReLU())


def test_weight_reads_outside_forward_are_float():
    lin = nn.Linear(5, 4)
    w = lin.weight
    QuantModuleRegistry.convert(lin)
    lin.weight_quantizer.amax = w.detach().abs().amax(dim=1, keepdim=True)
    assert lin.weight is w  # stored parameter outside forward
    with lin.quantize_weight():
        qw = lin.weight
    assert qw is not w
    torch.testing.assert_close(qw, _int8(w.detach(), lin.weight_quantizer.amax))
    lin.input_quantizer.disable()
    x = torch.randn(2, 5)
    torch.testing.assert_close(lin(x), F.linear(x, qw, lin.bias))


def test_cache_quantized_weights_reuses_and_invalidates():
    import modeloptim.torch.quantization as mtq

    model = nn.Sequential(nn.Linear(6, 5))
    mtq.quantize(model, mtq.INT8_WEIGHT_ONLY_CFG)
    calls = []
    model[0].weight_quantizer.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(3, 6)
    plain = model(x)
    calls.clear()
    with torch.no_grad(), mtq.cache_quantized_weights(model):
        torch.testing.assert_close(model(x), plain, rtol=0, atol=0)
        model(x)
        assert len(calls) == 1  # second forward reused the quantized weight
        model[0].weight.mul_(2.0)  # in-place change -> recomputed
        w = model[0]._parameters["weight"]
        amax = model[0].weight_quantizer.amax.clone()
        torch.testing.assert_close(model(x), F.linear(x, _int8(w, amax), model[0].bias))
        assert len(calls) == 2
        model[0].weight_quantizer.amax = amax * 4  # new amax -> recomputed
        torch.testing.assert_close(model(x), F.linear(x, _int8(w, amax * 4), model[0].bias))
        assert len(calls) == 3
        model[0].weight_quantizer.disable()
        torch.testing.assert_close(model(x), F.linear(x, w, model[0].bias))
    with torch.enable_grad():
        model[0].weight_quantizer.enable()
        model(x)
        model(x)
    assert len(calls) == 6  # outside the context (and with grad) nothing is cached
    assert "_quantized_weight_cache" not in model[0].__dict__
