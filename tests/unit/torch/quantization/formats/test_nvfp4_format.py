import itertools

import pytest
import torch
from fq_refs import DTYPES, E2M1, make_inputs, ref_nvfp4, round_to_grid

from modeloptim.torch.quantization.formats import MINIFLOATS, NVFP4Format, resolve_format


def test_e2m1_grid_and_ties_to_even():
    mf = MINIFLOATS["e2m1"]
    assert mf.magnitudes() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0] == E2M1
    v = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 100.0, -0.75, -5.0, 0.26])
    expected = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -1.0, -4.0, 0.5])
    assert torch.equal(mf.round(v), expected)
    assert torch.equal(mf.decode(mf.encode(v)), expected)
    assert mf.encode(torch.tensor([-6.0])).item() == 0b1111


@pytest.mark.parametrize("name", ["e2m1", "e3m2", "e2m3"])
def test_minifloat_round_matches_nearest_neighbour_reference(name):
    mf = MINIFLOATS[name]
    mags = mf.magnitudes()
    # every grid point, every midpoint (ties), points just around midpoints, and random values
    mids = [(a + b) / 2 for a, b in itertools.pairwise(mags)]
    v = torch.tensor(mags + mids, dtype=torch.float32)
    v = torch.cat([v, torch.nextafter(v, v + 1), torch.nextafter(v, v - 1), -v])
    v = torch.cat([v, torch.randn(5000) * mags[-1] / 2, torch.tensor([1e9, -1e9])])
    ref = round_to_grid(v, mags).float()
    assert torch.equal(mf.round(v), ref)
    assert torch.equal(mf.decode(mf.encode(v)), ref)


@pytest.mark.parametrize("shape", [(16,), (4, 64), (3, 5, 48), (2, 70)])  # 70: padded block
@pytest.mark.parametrize("dtype", DTYPES)
def test_nvfp4_bit_exact_with_reference(shape, dtype):
    x = make_inputs(shape, dtype)
    fmt = NVFP4Format()
    gamax = x.float().abs().amax()
    out = fmt.fake_quant(x, gamax)
    assert out.dtype == dtype
    assert out.shape == x.shape
    assert torch.equal(out, ref_nvfp4(x.float(), gamax).to(dtype))
    q = fmt.quantize(x, gamax)
    assert q.codes.dtype == torch.uint8
    assert int(q.codes.max()) <= 15
    assert q.scales["block_scale"].dtype == torch.float8_e4m3fn
    assert torch.equal(q.dequantize(), out)


def test_nvfp4_calibrated_global_amax_smaller_than_data_saturates():
    x = make_inputs((8, 32), torch.float32)
    gamax = x.abs().amax() * 0.01  # block scales clamp at 448 -> elements saturate at 6*d
    out = NVFP4Format().fake_quant(x, gamax)
    assert torch.equal(out, ref_nvfp4(x, gamax))
    assert out.abs().max() <= 6 * 448 * gamax / (6 * 448) + 1e-6


def test_nvfp4_float64_error_within_half_step():
    x = make_inputs((16, 64), torch.float32, kind="plain")
    gamax = x.abs().amax()
    out = NVFP4Format().fake_quant(x, gamax).double()
    scale_2 = gamax.double() / (6 * 448)
    xb = x.double().reshape(-1, 16)
    s = (xb.abs().amax(1, keepdim=True) / (6 * scale_2)).float()
    d = (s.to(torch.float8_e4m3fn).double() * scale_2).expand_as(xb)
    err = (out.reshape(-1, 16) - xb).abs()
    # E2M1 grid spacing is <= 2 (between 4 and 6); half step of the largest gap, scaled by d
    step = torch.where(xb.abs() / d >= 4, 2.0, torch.where(xb.abs() / d >= 2, 1.0, 0.5))
    clip = (xb.abs() - 6 * d).clamp(min=0)
    assert (err <= step / 2 * d + clip + 1e-7).all()


def test_zero_blocks_and_zero_global_amax():
    x = torch.zeros(2, 32)
    x[1, 16:] = torch.randn(16)
    out = NVFP4Format().fake_quant(x, x.abs().amax())
    assert torch.equal(out[0], torch.zeros(32))
    assert torch.equal(out[1, :16], torch.zeros(16))
    assert torch.isfinite(out).all()
    assert torch.equal(NVFP4Format().fake_quant(x, torch.tensor(0.0)), torch.zeros(2, 32))
    q = NVFP4Format().quantize(x, torch.tensor(0.0))
    assert torch.equal(q.dequantize(), torch.zeros(2, 32))


def test_dynamic_global_and_bits_and_resolve():
    x = make_inputs((4, 32), torch.float32)
    dyn = resolve_format({"num_bits": "nvfp4", "type": "dynamic"})
    assert isinstance(dyn, NVFP4Format)
    assert dyn.is_dynamic
    assert torch.equal(dyn.fake_quant(x), ref_nvfp4(x, x.abs().amax()))
    assert NVFP4Format().bits_per_element == 4.5
    with pytest.raises(ValueError, match="amax: nvfp4 takes one global amax"):
        NVFP4Format().fake_quant(x, torch.ones(2))


def test_static_blocks_use_calibrated_block_amax():
    # ModelOpt's block_sizes={-1: 16, "type": "static", "scale_bits": (4, 3)}
    fmt = resolve_format(
        {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)}}
    )
    assert isinstance(fmt, NVFP4Format)
    assert fmt.static_blocks
    x = make_inputs((4, 40), torch.float32)  # 40: padded to 3 blocks per row
    bamax = fmt.compute_amax(x)
    assert bamax.shape == (12, 1)
    calib = bamax * torch.linspace(0.5, 1.0, 12).reshape(-1, 1)  # some blocks clip
    scale_2 = calib.max() / (6.0 * 448.0)

    def ref_block(b, a):
        s = a / (6.0 * scale_2)
        s = torch.where(s == 0, torch.ones_like(s), s).clamp(2.0**-9, 448.0)
        d = s.to(torch.float8_e4m3fn).float() * scale_2
        return round_to_grid(b / d, E2M1).float() * d

    ref = torch.empty_like(x)
    k = 0
    for r in range(4):
        for c in range(0, 40, 16):
            ref[r, c : c + 16] = ref_block(x[r, c : c + 16], calib[k, 0])
            k += 1
    out = fmt.fake_quant(x, calib)
    assert torch.equal(out, ref)
    assert torch.equal(fmt.quantize(x, calib).dequantize(), out)
    with pytest.raises(ValueError, match="blocks of block_sizes"):
        fmt.fake_quant(x, torch.ones(3))
