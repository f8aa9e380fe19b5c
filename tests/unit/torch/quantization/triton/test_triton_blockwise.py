"""Dynamic-block INT / FP8, NVFP4 and MX fake-quant kernels vs the PyTorch reference, bit-exact.

Runs in Triton's CPU interpreter (see conftest.py); sizes stay small.
"""

import pytest
import torch

triton = pytest.importorskip("triton")

from modeloptim.torch.quantization.triton import blockwise as bw  # noqa: E402
from modeloptim.torch.quantization.triton import reference as ref  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _rows(n, b, dtype):
    """Rows spanning 6 decades, one all-zero row, one outlier."""
    x = torch.randn(n, b) * torch.logspace(-3, 3, n)[:, None]
    x[1] = 0.0
    x[2, 3] = 6e4
    return x.to(dtype)


def _same(a, b):
    assert a is not None
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    assert torch.equal(a.nan_to_num(), b.nan_to_num()), (a.float() - b.float()).abs().max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", [16, 128, 24])
def test_int_dynamic_block(dtype, block):
    x = _rows(20, block, dtype)
    for nb, uns, narrow in [(4, False, True), (8, False, False)]:
        _same(
            bw.fake_quant_int_dynamic_block(x, nb, uns, narrow),
            ref.fake_quant_int_dynamic_block(x, nb, uns, narrow),
        )
    xa = x.abs()
    _same(
        bw.fake_quant_int_dynamic_block(xa, 4, True, True),
        ref.fake_quant_int_dynamic_block(xa, 4, True, True),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exponent_bits", [4, 5])
def test_fp8_dynamic_block(dtype, exponent_bits):
    x = _rows(20, 32, dtype)
    _same(
        bw.fake_quant_fp8_dynamic_block(x, exponent_bits),
        ref.fake_quant_fp8_dynamic_block(x, exponent_bits),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_nvfp4(dtype):
    x = _rows(40, 16, dtype)
    for ga in (x.float().abs().max(), torch.tensor(0.05), torch.tensor(0.0), torch.tensor(1e30)):
        _same(bw.fake_quant_nvfp4(x, ga), ref.fake_quant_nvfp4(x, ga))


def test_nvfp4_zero_global_amax_gives_zeros():
    out = bw.fake_quant_nvfp4(torch.randn(4, 16), torch.tensor(0.0))
    assert out is not None
    assert torch.all(out == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("elem", ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"])
def test_mx(dtype, elem):
    x = _rows(24, 32, dtype)
    _same(bw.fake_quant_mx(x, elem), ref.fake_quant_mx(x, elem))


@pytest.mark.parametrize("elem", ["e4m3", "e2m1", "int8"])
def test_mx_extreme_exponents(elem):
    # subnormal blocks (exponent floored at -127), the largest floats, exact powers of two
    x = torch.tensor([[1e-40] * 32, [3e38] * 32, [2.0**-130] * 32, [6.0 * 2**20] * 32])
    x[:, 1] *= -0.37
    _same(bw.fake_quant_mx(x, elem), ref.fake_quant_mx(x, elem))


def test_nan_propagates_through_block_amax():
    x = torch.randn(3, 16)
    x[1, 4] = float("nan")
    _same(
        bw.fake_quant_int_dynamic_block(x, 4, False, True),
        ref.fake_quant_int_dynamic_block(x, 4, False, True),
    )
    x2 = torch.cat([x, x], 1)
    _same(bw.fake_quant_mx(x2, "e2m1"), ref.fake_quant_mx(x2, "e2m1"))


def test_unsupported_shapes_return_none_and_bad_names_raise():
    assert bw.fake_quant_nvfp4(torch.randn(4, 32), torch.tensor(1.0)) is None
    assert bw.fake_quant_mx(torch.randn(4, 16), "e2m1") is None
    assert bw.fake_quant_int_dynamic_block(torch.randn(4, 4, 4), 4, False, True) is None
    with pytest.raises(ValueError, match="elem"):
        bw.fake_quant_mx(torch.randn(4, 32), "e9m9")
    with pytest.raises(ValueError, match="exponent_bits"):
        bw.fake_quant_fp8_dynamic_block(torch.randn(4, 32), 2)


def test_int64_offsets_path(monkeypatch):
    monkeypatch.setattr(bw, "INT64_MIN_NUMEL", 0)
    x = _rows(20, 32, torch.bfloat16)
    _same(bw.fake_quant_mx(x, "e2m1"), ref.fake_quant_mx(x, "e2m1"))
    _same(
        bw.fake_quant_int_dynamic_block(x, 4, False, True),
        ref.fake_quant_int_dynamic_block(x, 4, False, True),
    )
    x16 = x.reshape(-1, 16)
    _same(
        bw.fake_quant_nvfp4(x16, x.float().abs().amax()),
        ref.fake_quant_nvfp4(x16, x.float().abs().amax()),
    )
