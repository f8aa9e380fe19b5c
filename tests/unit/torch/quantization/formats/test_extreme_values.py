import pytest
import torch
from fq_refs import blockwise, ref_fp8, ref_int, ref_mx, ref_nvfp4

from modeloptim.torch.quantization.formats import (
    Blocked,
    FP8Format,
    IntegerFormat,
    MXFormat,
    NVFP4Format,
)


def _huge_range(rows=8, cols=64):
    """float32 rows whose magnitudes go from 1e-38 (subnormal edge) up to 1e37."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(rows, cols, generator=g)
    scales = torch.logspace(-38, 37, rows).reshape(-1, 1)
    x = x * scales
    x[0, :5] = 0.0
    return x


def test_integer_blocks_over_huge_range():
    x = _huge_range()
    fmt = IntegerFormat(8, granularity=Blocked({-1: 16}, dynamic=True))
    out = fmt.fake_quant(x)
    ref = blockwise(x, {-1: 16}, lambda b: ref_int(b, b.abs().max(), 8))
    assert torch.equal(out, ref)
    assert torch.isfinite(out).all()
    # rows whose amax is below 2**-24 quantize to exactly zero
    assert torch.equal(out[0], torch.zeros(64))


@pytest.mark.parametrize("ebits", [4, 5])
def test_fp8_blocks_over_huge_range(ebits):
    x = _huge_range()
    out = FP8Format(ebits, Blocked({-1: 32}, dynamic=True)).fake_quant(x)
    ref = blockwise(x, {-1: 32}, lambda b: ref_fp8(b, b.abs().max(), ebits))
    assert torch.equal(out, ref)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("elem", ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"])
def test_mx_over_huge_range(elem):
    x = _huge_range(cols=32)
    out = MXFormat(elem).fake_quant(x)
    assert torch.equal(out, ref_mx(x, elem))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("gamax", [1e-6, 1.0, 1e30, 3e38])
def test_nvfp4_extreme_global_amax(gamax):
    x = torch.randn(4, 32) * gamax / 4
    a = torch.tensor(gamax)
    out = NVFP4Format().fake_quant(x, a)
    assert torch.equal(out, ref_nvfp4(x, a))
    assert torch.isfinite(out).all()
