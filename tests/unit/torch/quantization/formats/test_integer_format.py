import numpy as np
import pytest
import torch
from fq_refs import DTYPES, SHAPES, blockwise, int_bounds, make_inputs, ref_int, ref_int_f64

from modeloptim.torch.quantization.formats import (
    Blocked,
    IntegerFormat,
    PerChannel,
    PerTensor,
    resolve_format,
)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("bits", "unsigned", "narrow"),
    [(8, False, True), (4, False, False), (8, True, True), (3, False, True)],
)
def test_per_tensor_bit_exact(shape, dtype, bits, unsigned, narrow):
    x = make_inputs(shape, dtype)
    if unsigned:
        x = x.abs()
    fmt = IntegerFormat(bits, unsigned, narrow)
    amax = x.float().abs().amax() * 0.7  # some values clip
    out = fmt.fake_quant(x, amax)
    assert out.dtype == dtype
    assert out.shape == x.shape
    ref = ref_int(x.float(), amax, bits, unsigned, narrow).to(dtype)
    assert torch.equal(out, ref)
    # float64 reference: within half a step (float32 rounding can only move exact ties)
    # float64: the error to the (clipped) exact input is within half a step, plus the
    # output dtype's own rounding; almost all elements equal the float64 quantization
    ref64, half = ref_int_f64(x, amax, bits, unsigned, narrow)
    lo, hi, _ = int_bounds(bits, unsigned, narrow)
    step = 2 * half
    clipped = x.double().clamp(lo * step, hi * step)
    out_eps = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[dtype]
    err = (out.double() - clipped).abs()
    assert (err <= half * (1 + 1e-6) + out_eps * clipped.abs()).all()
    same = torch.isclose(out.double(), ref64, rtol=2 * out_eps, atol=1e-30)
    assert same.float().mean() > 0.99
    # real quant -> dequant equals fake quant exactly, codes in storage dtype
    q = fmt.quantize(x, amax)
    assert q.codes.dtype == (torch.uint8 if unsigned else torch.int8)
    assert torch.equal(q.dequantize(), out)


def test_known_values_and_ranges():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.25, 1.0, 2.0, 0.5 / 127 * 3])
    amax = torch.tensor(1.0)
    out = IntegerFormat(8).fake_quant(x, amax)
    # 0.25*127 = 31.75 -> 32; 2.0 clips to 127; 1.5 -> 2 (half even)
    expected = torch.tensor([-127, -64, 0, 32, 127, 127, 2]) / torch.tensor(127.0)
    assert torch.equal(out, expected.float())
    # narrow vs full range at the negative end
    assert (
        IntegerFormat(8, narrow_range=False).quantize(torch.tensor([-5.0]), amax).codes.item()
        == -128
    )
    assert IntegerFormat(8).quantize(torch.tensor([-5.0]), amax).codes.item() == -127
    # unsigned clamps negatives to 0 and uses 255 levels
    u = IntegerFormat(8, unsigned=True)
    assert torch.equal(u.fake_quant(torch.tensor([-1.0, 1.0]), amax), torch.tensor([0.0, 1.0]))
    assert u.quantize(torch.tensor([0.5]), amax).codes.item() == 128  # 127.5 -> 128 (even)


def test_zero_and_tiny_amax_quantize_to_zero():
    x = torch.randn(4, 8)
    amax = torch.tensor([[1.0], [0.0], [2.0**-25], [2.0**-23]])
    fmt = IntegerFormat(8, granularity=PerChannel(0))
    out = fmt.fake_quant(x, amax)
    assert torch.equal(out[1:3], torch.zeros(2, 8))
    assert out[3].abs().max() > 0
    assert torch.isfinite(out).all()
    assert torch.equal(fmt.quantize(x, amax).dequantize(), out)


@pytest.mark.parametrize(
    ("shape", "axis"), [((6, 10), 0), ((6, 10), -1), ((3, 4, 5), (0, 2)), ((2, 3, 4, 5), 1)]
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_channel(shape, axis, dtype):
    x = make_inputs(shape, dtype)
    fmt = IntegerFormat(8, granularity=PerChannel(axis))
    amax = fmt.compute_amax(x)
    axes = {a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis)}
    assert amax.shape == tuple(s if d in axes else 1 for d, s in enumerate(shape))
    ref_amax = x.float().abs().amax(dim=[d for d in range(x.ndim) if d not in axes], keepdim=True)
    assert torch.equal(amax, ref_amax)
    out = fmt.fake_quant(x, amax)
    assert torch.equal(out, ref_int(x.float(), ref_amax, 8).to(dtype))
    assert torch.equal(fmt.quantize(x, amax).dequantize(), out)


@pytest.mark.parametrize(
    ("shape", "blocks"),
    [
        ((4, 256), {-1: 128}),
        ((3, 100), {-1: 32}),  # 100 is not a multiple of 32: padded
        ((2, 5, 70), {-1: 16}),
        ((130, 260), {-1: 128, -2: 128}),  # 2-D blocks with padding on both dims
        ((9, 6), {0: 4}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_static_and_dynamic_blocks(shape, blocks, dtype):
    x = make_inputs(shape, dtype)
    fmt = IntegerFormat(4, granularity=Blocked(blocks))
    amax = fmt.compute_amax(x)
    out = fmt.fake_quant(x, amax)
    ref = blockwise(x.float(), blocks, lambda b: ref_int(b, b.abs().max(), 4)).to(dtype)
    assert torch.equal(out, ref)
    dyn = IntegerFormat(4, granularity=Blocked(blocks, dynamic=True))
    assert torch.equal(dyn.fake_quant(x), ref)
    assert torch.equal(fmt.quantize(x, amax).dequantize(), out)
    assert torch.equal(dyn.quantize(x).dequantize(), out)
    # a static amax scaled down clips per block exactly like the reference
    out2 = fmt.fake_quant(x, amax * 0.5)
    ref2 = blockwise(x.float(), blocks, lambda b: ref_int(b, b.abs().max() * 0.5, 4)).to(dtype)
    assert torch.equal(out2, ref2)


def test_int4_named_is_block128_and_bits():
    fmt = resolve_format({"num_bits": "int4"})
    assert isinstance(fmt, IntegerFormat)
    assert fmt.granularity == Blocked({-1: 128})
    assert fmt.bits_per_element == pytest.approx(4 + 16 / 128)
    assert IntegerFormat(8).bits_per_element == 8


def test_dynamic_per_tensor_uses_input_amax():
    x = torch.randn(5, 7)
    dyn = IntegerFormat(8, granularity=PerTensor(dynamic=True))
    assert torch.equal(dyn.fake_quant(x), ref_int(x, x.abs().max(), 8))


def test_bad_inputs():
    fmt = IntegerFormat(8)
    with pytest.raises(TypeError, match="x: expected a float"):
        fmt.fake_quant(torch.ones(3, dtype=torch.int32), torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x: expected a torch\.Tensor"):
        fmt.fake_quant([1.0, 2.0], torch.tensor(1.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="amax"):
        fmt.fake_quant(torch.ones(3))
    with pytest.raises(ValueError, match="amax: shape"):
        IntegerFormat(8, granularity=PerChannel(0)).fake_quant(torch.ones(3, 4), torch.ones(4))
    with pytest.raises(ValueError, match="num_bits"):
        IntegerFormat(9)
    with pytest.raises(ValueError, match="axis"):
        IntegerFormat(8, granularity=PerChannel(3)).fake_quant(torch.ones(3, 4), torch.ones(1))
    with pytest.raises(ValueError, match="block_sizes"):
        Blocked({-1: 0})
    with pytest.raises(ValueError, match="blocks of block_sizes"):
        IntegerFormat(4, granularity=Blocked({-1: 4})).fake_quant(torch.ones(2, 8), torch.ones(3))


def test_scale_is_ieee_float32_division_numpy_reference():
    # For these amax values bound * (1 / amax) != bound / amax in float32; DESIGN pins the
    # division, and numpy's float32 arithmetic (IEEE, round half even) is the reference.
    amax = np.array([4.9019341468811035, 6.324062824249268, 1.689589500427246], np.float32)
    x = np.random.default_rng(0).normal(size=(3, 4096)).astype(np.float32) * amax[:, None]
    scale = np.float32(127) / amax[:, None]
    ref = np.clip(np.round(x * scale), -127, 127) / scale
    out = IntegerFormat(8, granularity=PerChannel(0)).fake_quant(
        torch.from_numpy(x), torch.from_numpy(amax[:, None])
    )
    assert np.array_equal(out.numpy(), ref)
    assert not np.array_equal(np.float32(127) * (np.float32(1) / amax), np.float32(127) / amax)
