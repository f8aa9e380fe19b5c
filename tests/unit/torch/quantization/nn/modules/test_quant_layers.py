"""Numerics of each quantized wrapper against the original op on hand-quantized tensors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modeloptim.torch.quantization.nn import QuantModuleRegistry


def _int8(x: torch.Tensor, amax: torch.Tensor | float) -> torch.Tensor:
    scale = torch.div(torch.tensor(127.0), torch.as_tensor(amax, dtype=torch.float32))
    return torch.clamp(torch.round(x * scale), -127, 127) / scale


def _set(q, amax, **attrs) -> None:
    q.set_from_attribute_config({"num_bits": 8, **attrs})
    q.enable()
    q.amax = amax


@pytest.mark.parametrize(
    ("layer", "shape", "fn"),
    [
        (nn.Conv1d(3, 4, 3), (2, 3, 9), F.conv1d),
        (nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 6), lambda x, w, b: F.conv2d(x, w, b, padding=1)),
        (nn.Conv3d(2, 3, 2), (1, 2, 4, 4, 4), F.conv3d),
    ],
)
def test_conv_per_channel(layer, shape, fn):
    ref = copy.deepcopy(layer)
    QuantModuleRegistry.convert(layer)
    w = ref.weight.detach()
    w_amax = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
    _set(layer.weight_quantizer, w_amax, axis=0)
    _set(layer.input_quantizer, 1.5)
    x = torch.randn(shape)
    torch.testing.assert_close(layer(x), fn(_int8(x, 1.5), _int8(w, w_amax), ref.bias))


def test_conv_transpose_default_axis_is_output_channels():
    layer = nn.ConvTranspose2d(3, 5, 3)
    w = layer.weight.detach().clone()  # [C_in=3, C_out=5, 3, 3]
    QuantModuleRegistry.convert(layer)
    assert layer.weight_quantizer.axis == 1
    w_amax = w.abs().amax(dim=(0, 2, 3), keepdim=True)
    layer.weight_quantizer.amax = w_amax
    layer.input_quantizer.disable()
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(layer(x), F.conv_transpose2d(x, _int8(w, w_amax), layer.bias))


@pytest.mark.parametrize(
    "layer",
    [
        nn.MaxPool2d(2),
        nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.BatchNorm2d(3).eval(),
        nn.InstanceNorm2d(3),
        nn.LeakyReLU(0.1),
    ],
)
def test_input_and_output_quantizers(layer):
    ref = copy.deepcopy(layer)
    QuantModuleRegistry.convert(layer)
    assert not hasattr(layer, "weight_quantizer")
    _set(layer.input_quantizer, 2.0)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(layer(x), ref(_int8(x, 2.0)))
    _set(layer.output_quantizer, 0.5)
    torch.testing.assert_close(layer(x), _int8(ref(_int8(x, 2.0)), 0.5))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_rnn_quantizes_all_weight_matrices(cls):
    layer = cls(4, 6, num_layers=2, batch_first=True)
    ref = copy.deepcopy(layer)
    QuantModuleRegistry.convert(layer)
    assert layer.weight_names == ("weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1")
    rows = ref.weight_ih_l0.shape[0]
    amax = torch.stack([getattr(ref, n).detach().abs().amax(dim=1) for n in layer.weight_names])
    amax = amax.amax(dim=0).reshape(rows, 1)  # one shared per-row quantizer
    _set(layer.weight_quantizer, amax, axis=0)
    _set(layer.input_quantizer, 2.5)
    with torch.no_grad():
        for n in layer.weight_names:
            getattr(ref, n).copy_(_int8(getattr(ref, n), amax))
    x = torch.randn(3, 5, 4)
    out, h = layer(x)
    ref_out, ref_h = ref(_int8(x, 2.5))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h)
    # the cached weight list is float again after forward
    assert layer._flat_weights[0] is layer._parameters["weight_ih_l0"]


def test_rnn_packed_sequence_input():
    layer = nn.GRU(3, 4)
    ref = copy.deepcopy(layer)
    QuantModuleRegistry.convert(layer)
    layer.weight_quantizer.disable()
    _set(layer.input_quantizer, 1.0)
    x = torch.randn(5, 2, 3)
    packed = nn.utils.rnn.pack_padded_sequence(x, [5, 3])
    out, _ = layer(packed)
    ref_out, _ = ref(nn.utils.rnn.pack_padded_sequence(_int8(x, 1.0), [5, 3]))
    torch.testing.assert_close(out.data, ref_out.data)


def test_multihead_attention_quantizes_inputs_in_proj_and_out_proj():
    model = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True))
    mha = model[0]
    ref = copy.deepcopy(mha)
    for module in list(model.modules()):
        if type(module) in QuantModuleRegistry:
            QuantModuleRegistry.convert(module)
    in_amax = ref.in_proj_weight.detach().abs().amax(dim=1, keepdim=True)
    out_amax = ref.out_proj.weight.detach().abs().amax(dim=1, keepdim=True)
    _set(mha.weight_quantizer, in_amax, axis=0)
    _set(mha.out_proj.weight_quantizer, out_amax, axis=0)
    _set(mha.input_quantizer, 3.0)
    with torch.no_grad():
        ref.in_proj_weight.copy_(_int8(ref.in_proj_weight, in_amax))
        ref.out_proj.weight.copy_(_int8(ref.out_proj.weight, out_amax))
    x = torch.randn(2, 5, 8)
    out, weights = mha(x, x, x)
    ref_out, ref_weights = ref(_int8(x, 3.0), _int8(x, 3.0), _int8(x, 3.0))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_weights)
