"""Quantized weight containers: dequantization equals the fake quantizers."""

import pytest
import torch

from modeloptim.torch.quantization.backends import weights as W
from modeloptim.torch.quantization.triton import reference as ref


def test_fp8_per_tensor_dequant_equals_fake_quant():
    w = torch.randn(32, 48) * 5
    qw = W.quantize_fp8(w)
    assert qw.data.dtype == torch.float8_e4m3fn
    assert qw.scale.dim() == 0
    assert torch.equal(qw.dequantize(), ref.fake_quant_fp8(w, w.abs().amax(), 4))


def test_fp8_per_channel_dequant_close_to_fake_quant():
    w = torch.randn(32, 48) * torch.logspace(-2, 2, 32)[:, None]
    qw = W.quantize_fp8(w, per_channel=True)
    fq = ref.fake_quant_fp8(w, w.abs().amax(1, keepdim=True), 4)
    assert qw.scale.shape == (32,)
    torch.testing.assert_close(qw.dequantize(), fq, rtol=0, atol=0)


def test_int8_dequant_within_half_step():
    w = torch.randn(16, 40)
    qw = W.quantize_int8(w)
    step = w.abs().amax(1, keepdim=True) / 127
    assert torch.all((qw.dequantize() - w).abs() <= step / 2 + 1e-6)
    assert qw.data.dtype == torch.int8
    assert int(qw.data.abs().max()) == 127


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_groups_and_error(dtype):
    w = (torch.randn(8, 256) * torch.logspace(-1, 1, 256)).to(dtype)
    qw = W.quantize_int4(w, group_size=64)
    assert qw.data.shape == (8, 128)
    assert qw.scale.shape == (8, 4)
    assert qw.scale.dtype == dtype
    deq = qw.dequantize()
    step = qw.scale.float().repeat_interleave(64, dim=1)
    assert torch.all((deq - w.float()).abs() <= step / 2 + 1e-3 * step)
    codes = deq.reshape(8, 4, 64) / qw.scale.float()[..., None]
    assert torch.all((codes - codes.round()).abs() < 1e-5)
    assert codes.abs().max() <= 7 + 1e-5


def test_nvfp4_dequant_equals_fake_quant():
    w = torch.randn(24, 64) * torch.logspace(-3, 2, 64)
    qw = W.quantize_nvfp4(w)
    assert qw.data.shape == (24, 32)
    assert qw.scale.dtype == torch.float8_e4m3fn
    expect = ref.fake_quant_nvfp4(w.reshape(-1, 16), w.abs().amax()).reshape(24, 64)
    assert torch.equal(qw.dequantize(), expect)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="multiple of 128"):
        W.quantize_int4(torch.randn(4, 100))
    with pytest.raises(ValueError, match="2-D"):
        W.quantize_nvfp4(torch.randn(4, 4, 16))
    with pytest.raises(ValueError, match="group_size"):
        W.quantize_int4(torch.randn(4, 128), group_size=3)
