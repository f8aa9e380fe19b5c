"""Quantized inputs of float-exported layers: exact sidecar state, folding, refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.export.float_layers import (
    _decode,
    _encode,
    float_layer_activation_state,
    is_float_layer,
    prepare_float_layers,
    restore_float_layer_activations,
)
from modeloptim.torch.export.packers import UnsupportedFormatError


def _two_linears(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def _fp8(model: nn.Module) -> nn.Module:
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))

    def loop(m: nn.Module) -> None:
        m(x)

    return mtq.quantize(model, copy.deepcopy(mtq.FP8_DEFAULT_CFG), loop)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_encoding_is_exact_for_every_float(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(3, 5, generator=g) * torch.logspace(-30, 30, 5)).to(dtype)
    t[0, 0] = torch.finfo(dtype).tiny / 4  # subnormal
    back = _decode(_encode(t), "q")
    assert back.dtype == dtype
    assert back.shape == t.shape
    assert torch.equal(back.view(-1), t.view(-1))


def test_malformed_state_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"quantizer 'a\.input_quantizer'"):
        _decode({"dtype": "float32", "shape": [2], "hex": ["zz"]}, "a.input_quantizer")


def test_state_of_a_float_layer_restores_exactly() -> None:
    model = _fp8(_two_linears())
    mtq.disable_quantizer(model, "*2.weight_quantizer")
    assert is_float_layer("2", model[2])
    assert not is_float_layer("0", model[0])
    state = float_layer_activation_state(model)
    assert list(state) == ["2.input_quantizer"]  # the quantized layer's scale is a tensor
    fresh = _fp8(_two_linears(seed=1))  # other weights, other amaxes
    assert not torch.equal(fresh[2].input_quantizer.amax, model[2].input_quantizer.amax)
    restore_float_layer_activations(fresh, state)
    assert torch.equal(fresh[2].input_quantizer.amax, model[2].input_quantizer.amax)


def test_unknown_quantizer_in_state_is_refused() -> None:
    model = _fp8(_two_linears())
    with pytest.raises(ValueError, match=r"'5\.input_quantizer' is not in the model"):
        restore_float_layer_activations(model, {"5.input_quantizer": {}})


def test_scale_only_smoothing_is_folded_into_the_float_weight() -> None:
    model = _fp8(_two_linears())
    layer = model[2]
    mtq.disable_quantizer(model, "*2.weight_quantizer")
    iq = layer.input_quantizer
    iq.disable_quant()  # an AWQ pre-scaler: scales, does not quantize
    s = torch.linspace(0.5, 2.0, 32)
    with torch.no_grad():
        layer.weight.div_(s)
    iq.pre_quant_scale = s
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(4))
    ref = (x.double() * s.double()) @ layer.weight.detach().double().T + layer.bias.double()
    assert prepare_float_layers(model) == ["2"]
    assert iq.pre_quant_scale is None
    out = layer(x)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


def test_quantized_smoothed_input_of_a_float_layer_is_refused_unchanged() -> None:
    model = _fp8(_two_linears())
    mtq.disable_quantizer(model, "*2.weight_quantizer")
    model[2].input_quantizer.pre_quant_scale = torch.full((32,), 2.0)
    model[0].input_quantizer.pre_quant_scale = torch.full((16,), 2.0)  # quantized layer: fine
    w = model[2].weight.detach().clone()
    with pytest.raises(UnsupportedFormatError, match=r"'2\.input_quantizer'.*smoothing"):
        prepare_float_layers(model)
    assert torch.equal(model[2].weight, w)
    assert model[2].input_quantizer.pre_quant_scale is not None
