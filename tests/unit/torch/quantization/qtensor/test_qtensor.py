"""Packed quantized tensors: exact equality with independent float32 fake-quant references."""

import io

import pytest
import torch

from modeloptim.torch.quantization.qtensor import (
    QTENSOR_TYPES,
    FP8QTensor,
    INT4BlockQTensor,
    INT8QTensor,
    MXFP4QTensor,
    MXFP8QTensor,
    NVFP4QTensor,
    QTensor,
)

from . import _reference as ref

SHAPES = [(7, 64), (3, 5, 48), (4, 50)]  # 50: not a multiple of any block


def _x(shape, dtype=torch.float32):
    x = torch.randn(shape) * 2
    x.view(-1)[3] = 40.0  # outlier
    x.view(-1)[5] = 0.0
    return x.to(dtype)


def _exact(a, b):
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_per_channel(shape, dtype):
    x = _x(shape, dtype)
    amax = x.float().abs().amax(dim=-1, keepdim=True)
    amax[0] = 0.0  # zero amax -> zeros
    qt = INT8QTensor.quantize(x, amax)
    assert qt.data.dtype == torch.int8
    assert qt.data.shape == x.shape
    _exact(qt.dequantize(), ref.int_fq(x, amax, 127.0).to(dtype))
    assert (qt.dequantize()[0] == 0).all()


def test_int8_per_tensor_and_weight_scale():
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    qt = INT8QTensor.quantize(x, torch.tensor(4.0))
    assert qt.data.tolist() == [[32, -64, 16, 95]]  # round_half_even(x * 127/4): 95.25 -> 95
    torch.testing.assert_close(qt.weight_scale(), torch.tensor(4.0 / 127), rtol=1e-7, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_int4_block(shape):
    x = _x(shape)
    qt = INT4BlockQTensor.quantize(x, block_size=16)
    nb = -(-shape[-1] // 16)
    assert qt.data.dtype == torch.uint8
    assert qt.data.shape == (*shape[:-1], -(-shape[-1] // 2))
    assert qt.scales["scale"].shape == (*shape[:-1], nb)
    xb, n = ref.blocks(x, 16)
    expect = ref.unblock(ref.int_fq(xb, xb.abs().amax(-1, keepdim=True), 7.0), n)
    _exact(qt.dequantize(), expect)
    assert qt.codes().abs().max() <= 7


def test_int4_static_amax_clips():
    x = torch.tensor([[0.7, -1.4, 3.0, 0.0]])
    qt = INT4BlockQTensor.quantize(x, torch.tensor([1.4]), block_size=4)
    assert qt.codes().tolist() == [[4, -7, 7, 0]]  # 3.0 clips to 7; 0.7*5 = 3.5 -> 4 (even)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fp8_per_tensor_and_channel(shape, dtype):
    x = _x(shape, dtype)
    for amax in (x.float().abs().amax(), x.float().abs().amax(dim=-1, keepdim=True) * 0.5):
        qt = FP8QTensor.quantize(x, amax)
        assert qt.data.dtype == torch.float8_e4m3fn
        _exact(qt.dequantize(), ref.fp8_fq(x, amax).to(dtype))


def test_fp8_2d_block():
    x = _x((40, 70))
    qt = FP8QTensor.quantize(x, block_size=(16, 32))
    assert qt.scales["scale"].shape == (3, 3)
    xp = torch.nn.functional.pad(x, (0, 26, 0, 8)).reshape(3, 16, 3, 32)
    amax = xp.abs().amax(dim=(1, 3), keepdim=True)
    expect = ref.fp8_fq(xp, amax).reshape(48, 96)[:40, :70]
    _exact(qt.dequantize(), expect)


@pytest.mark.parametrize("shape", SHAPES)
def test_nvfp4(shape):
    x = _x(shape)
    gamax = x.abs().amax() * 1.25
    qt = NVFP4QTensor.quantize(x, gamax)
    assert qt.scales["block_scale"].dtype == torch.float8_e4m3fn
    assert qt.scales["block_scale"].shape == (*shape[:-1], -(-shape[-1] // 16))
    _exact(qt.dequantize(), ref.nvfp4_fq(x, gamax))
    if shape[-1] % 16 == 0:
        numel = x.numel()
        assert qt.bits_per_element == pytest.approx(4.5 + 32 / numel)  # + float32 scale_2


def test_nvfp4_ties_and_saturation():
    # block amax 6 with global amax 6*448 -> block scale 1, d = 1: values are their own codes
    x = torch.tensor([[0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -6.0] + [0.0] * 8])
    qt = NVFP4QTensor.quantize(x, torch.tensor(6.0 * 448))
    assert qt.dequantize()[0, :8].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -6.0]


@pytest.mark.parametrize("shape", SHAPES)
def test_mxfp8(shape):
    x = _x(shape)
    x.view(-1)[10:42] = 0.0  # an all-zero block
    qt = MXFP8QTensor.quantize(x)
    assert qt.scales["scale"].dtype == torch.uint8
    expect = ref.mx_fq(x, 448.0, lambda y: y.clamp(-448, 448).to(torch.float8_e4m3fn).float())
    _exact(qt.dequantize(), expect)


@pytest.mark.parametrize("shape", SHAPES)
def test_mxfp4(shape):
    x = _x(shape) * 1e-3
    qt = MXFP4QTensor.quantize(x)
    _exact(qt.dequantize(), ref.mx_fq(x, 6.0, ref.e2m1_round))
    if shape[-1] % 32 == 0:
        assert qt.bits_per_element == pytest.approx(4.25)  # 4 + 8/32


def test_mx_exponent_power_of_two_boundary():
    # block amax exactly 448 * 2**3 -> e = 3 (not 4)
    x = torch.zeros(1, 32)
    x[0, 0] = 448.0 * 8
    qt = MXFP8QTensor.quantize(x)
    assert int(qt.scales["scale"][0, 0]) - 127 == 3
    assert qt.dequantize()[0, 0].item() == 448.0 * 8


def test_state_dict_roundtrip_and_device_move():
    x = _x((8, 48))
    for qt in (
        INT8QTensor.quantize(x, x.abs().amax(-1, keepdim=True)),
        INT4BlockQTensor.quantize(x, block_size=16),
        FP8QTensor.quantize(x, block_size=16),
        NVFP4QTensor.quantize(x),
        MXFP8QTensor.quantize(x),
        MXFP4QTensor.quantize(x),
    ):
        buf = io.BytesIO()
        torch.save({"sd": qt.state_dict(), "extra": qt.extra_state()}, buf)
        buf.seek(0)
        blob = torch.load(buf, weights_only=True)
        back = QTensor.from_state_dict(blob["sd"], blob["extra"])
        assert type(back) is type(qt)
        _exact(back.dequantize(), qt.dequantize())
        moved = qt.to("meta")
        assert moved.data.device.type == "meta"
        assert qt.data.device.type == "cpu"


def test_registry():
    assert {"int8", "int4_block", "fp8_e4m3", "nvfp4", "mxfp8", "mxfp4"} <= set(
        QTENSOR_TYPES.names()
    )
    with pytest.raises(KeyError, match="unknown quantized tensor format"):
        QTENSOR_TYPES.get("int3")


def test_bad_input():
    with pytest.raises(TypeError, match="x: expected a floating-point"):
        INT8QTensor.quantize(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="amax: shape"):
        INT8QTensor.quantize(torch.zeros(3, 4), torch.ones(5))
    with pytest.raises(ValueError, match="amax: 3 values"):
        INT4BlockQTensor.quantize(torch.zeros(2, 32), torch.ones(3), block_size=16)
    with pytest.raises(ValueError, match="non-negative"):
        FP8QTensor.quantize(torch.zeros(3), torch.tensor(-1.0))
