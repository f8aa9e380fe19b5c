import numpy as np
import pytest
import torch
from fq_refs import DTYPES, SHAPES, blockwise, make_inputs, ref_fp8, ref_fp8_f64

from modeloptim.torch.quantization.formats import Blocked, FP8Format, PerChannel


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ebits", [4, 5])
def test_per_tensor_bit_exact(shape, dtype, ebits):
    x = make_inputs(shape, dtype)
    fmt = FP8Format(ebits)
    amax = x.float().abs().amax() * 0.8
    out = fmt.fake_quant(x, amax)
    assert out.dtype == dtype
    assert torch.equal(out, ref_fp8(x.float(), amax, ebits).to(dtype))
    q = fmt.quantize(x, amax)
    assert q.codes.dtype == (torch.float8_e4m3fn if ebits == 4 else torch.float8_e5m2)
    assert torch.equal(q.dequantize(), out)


@pytest.mark.parametrize("ebits", [4, 5])
def test_float64_reference_within_half_step(ebits):
    x = make_inputs((8, 64), torch.float32)
    amax = x.abs().amax()
    out = FP8Format(ebits).fake_quant(x, amax).double()
    ref, _ = ref_fp8_f64(x, amax, ebits)
    # relative half-step of the mantissa (3 or 2 bits) plus subnormal floor
    mbits = 3 if ebits == 4 else 2
    tol = ref.abs() * 2.0 ** -(mbits + 1) + amax.double() * 2.0**-18
    assert ((out - ref).abs() <= tol).all()
    # nearly all elements land on the same grid point (differences: float32 rounding only)
    assert torch.isclose(out, ref, rtol=2.0**-20, atol=0).float().mean() > 0.99


def test_known_values():
    amax = torch.tensor(448.0)  # scale 1
    x = torch.tensor([0.0, 1.0, 17.0, 19.0, 500.0, -500.0, 1.0625, 1.1875])
    out = FP8Format(4).fake_quant(x, amax)
    # E4M3: spacing 2 in [16, 32): 17 -> 16 (even), 19 -> 20 (even); 1.0625 -> 1.0, 1.1875 -> 1.25
    assert torch.equal(out, torch.tensor([0.0, 1.0, 16.0, 20.0, 448.0, -448.0, 1.0, 1.25]))
    assert torch.equal(FP8Format(4).fake_quant(x, torch.tensor(0.0)), torch.zeros(8))


def test_per_channel_and_2d_blocks():
    x = make_inputs((130, 260), torch.bfloat16)
    pc = FP8Format(4, PerChannel(0))
    amax = pc.compute_amax(x)
    assert torch.equal(pc.fake_quant(x, amax), ref_fp8(x.float(), amax, 4).to(torch.bfloat16))
    blocks = {-1: 128, -2: 128}
    dyn = FP8Format(4, Blocked(blocks, dynamic=True))
    ref = blockwise(x.float(), blocks, lambda b: ref_fp8(b, b.abs().max(), 4)).to(torch.bfloat16)
    assert torch.equal(dyn.fake_quant(x), ref)
    assert torch.equal(dyn.quantize(x).dequantize(), ref)
    assert dyn.bits_per_element == pytest.approx(8 + 32 / 128**2)


def test_bad_exponent_bits():
    with pytest.raises(ValueError, match="num_bits"):
        FP8Format(3)


def test_fp8_scale_division_numpy_reference():
    amax = np.array([[4.9019341468811035], [6.324062824249268], [1.689589500427246]], np.float32)
    x = np.random.default_rng(1).normal(size=(3, 2048)).astype(np.float32) * amax
    scale = np.float32(448) / amax
    y = torch.from_numpy(np.clip(x * scale, -448, 448)).to(torch.float8_e4m3fn).float().numpy()
    ref = y * (np.float32(1) / scale)
    out = FP8Format(4, PerChannel(0)).fake_quant(torch.from_numpy(x), torch.from_numpy(amax))
    assert np.array_equal(out.numpy(), ref)


def test_per_token_dynamic_block_none_spans_the_row():
    # ModelOpt's FP8_PER_CHANNEL_PER_TOKEN_CFG input: {"type": "dynamic", "block_sizes": {-1: None}}
    from modeloptim.torch.quantization.formats import resolve_format

    fmt = resolve_format({"num_bits": (4, 3), "type": "dynamic", "block_sizes": {-1: None}})
    x = make_inputs((3, 5, 70), torch.bfloat16)
    ref = ref_fp8(x.float(), x.float().abs().amax(-1, keepdim=True), 4).to(torch.bfloat16)
    assert torch.equal(fmt.fake_quant(x), ref)
    assert fmt.is_dynamic
    assert fmt.granularity.describe() == "per-token dynamic"
