"""INT / FP8 fake-quant kernels (per tensor, per channel) vs the PyTorch reference, bit-exact.

Runs in Triton's CPU interpreter (see conftest.py); sizes stay small.
"""

import pytest
import torch

triton = pytest.importorskip("triton")

from modeloptim.torch.quantization.triton import elementwise as ew  # noqa: E402
from modeloptim.torch.quantization.triton import reference as ref  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _data(shape, dtype):
    x = torch.randn(shape) * 3
    x.view(-1)[::17] *= 40  # outliers beyond amax
    x.view(-1)[5] = 0.0
    return x.to(dtype)


def _amaxes(x):
    xf = x.float().abs()
    return {
        "tensor": xf.amax() * 0.6,
        "axis0": xf.amax(dim=(1, 2), keepdim=True) * 0.5,
        "axis1": xf.amax(dim=(0, 2), keepdim=True) * 0.7,
        "last": xf.amax(dim=(0, 1), keepdim=True) * 0.8,
        "last_1d": xf.amax(dim=(0, 1)) * 0.8,
    }


def _same(a, b):
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    assert torch.equal(a.nan_to_num(), b.nan_to_num()), (a.float() - b.float()).abs().max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("num_bits", "unsigned", "narrow"),
    [(8, False, True), (4, False, False), (8, True, True), (2, False, True)],
)
def test_int_matches_reference(dtype, num_bits, unsigned, narrow):
    x = _data((6, 5, 40), dtype)
    if unsigned:
        x = x.abs()
    for name, amax in _amaxes(x).items():
        out = ew.fake_quant_int(x, amax, num_bits, unsigned, narrow)
        assert out is not None, name
        _same(out, ref.fake_quant_int(x, amax, num_bits, unsigned, narrow))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exponent_bits", [4, 5])
def test_fp8_matches_reference(dtype, exponent_bits):
    x = _data((6, 5, 40), dtype)
    for name, amax in _amaxes(x).items():
        out = ew.fake_quant_fp8(x, amax, exponent_bits)
        assert out is not None, name
        _same(out, ref.fake_quant_fp8(x, amax, exponent_bits))


def test_fp8_grid_equals_torch_cast_on_all_magnitudes():
    # values spanning every E4M3/E5M2 binade incl. subnormals and exact ties
    mags = torch.cat([torch.logspace(-12, 5, 3000), torch.arange(0, 448, 0.0625)])
    x = torch.cat([mags, -mags]).float()
    one = torch.tensor(448.0)
    _same(ew.fake_quant_fp8(x, one, 4), ref.fake_quant_fp8(x, one, 4))
    big = torch.tensor(57344.0)
    _same(ew.fake_quant_fp8(x * 100, big, 5), ref.fake_quant_fp8(x * 100, big, 5))


def test_tiny_and_zero_amax_give_zeros():
    x = _data((4, 64), torch.float32)
    amax = torch.tensor([[1.0], [0.0], [2.0**-24], [2.0**-23]])
    out = ew.fake_quant_int(x, amax, 8, False, True)
    _same(out, ref.fake_quant_int(x, amax, 8, False, True))
    assert torch.all(out[1:3] == 0)
    assert torch.any(out[3] != 0)
    _same(ew.fake_quant_fp8(x, amax, 4), ref.fake_quant_fp8(x, amax, 4))


def test_nan_and_inf_propagate_like_torch():
    x = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 0.3, -0.001])
    amax = torch.tensor(1.0)
    _same(ew.fake_quant_int(x, amax, 8, False, True), ref.fake_quant_int(x, amax, 8, False, True))
    _same(ew.fake_quant_fp8(x, amax, 4), ref.fake_quant_fp8(x, amax, 4))


def test_non_contiguous_and_odd_sizes():
    x = _data((7, 33), torch.bfloat16).t()  # non-contiguous view, odd extents
    amax = x.float().abs().amax(dim=1, keepdim=True)
    _same(ew.fake_quant_int(x, amax, 4, False, True), ref.fake_quant_int(x, amax, 4, False, True))


def test_adjacent_amax_dims_merge():
    x = _data((4, 5, 6), torch.float32)
    for amax in (x.abs().amax(-1, keepdim=True) * 0.5, x.abs() * 0.9 + 0.1):
        _same(
            ew.fake_quant_int(x, amax, 8, False, True), ref.fake_quant_int(x, amax, 8, False, True)
        )
        _same(ew.fake_quant_fp8(x, amax, 4), ref.fake_quant_fp8(x, amax, 4))


def test_unsupported_layouts_return_none():
    x = torch.randn(4, 6)
    x3 = torch.randn(4, 5, 6)
    assert ew.fake_quant_int(x3, torch.rand(4, 1, 6), 8, False, True) is None  # not adjacent
    assert ew.fake_quant_int(x.double(), torch.tensor(1.0), 8, False, True) is None
    assert ew.fake_quant_fp8(x, torch.rand(5, 1), 4) is None  # wrong channel count


def test_bad_arguments_raise():
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="exponent_bits"):
        ew.fake_quant_fp8(x, torch.tensor(1.0), 3)
    with pytest.raises(ValueError, match="num_bits"):
        ew.fake_quant_int(x, torch.tensor(1.0), 1, False, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ste_backward_matches_reference(dtype):
    x = _data((6, 5, 40), dtype)
    g = torch.randn(x.shape, dtype=dtype)
    for amax in _amaxes(x).values():
        out = ew.ste_backward(x, g, amax)
        _same(out, ref.ste_backward(x, g, amax))
        assert out.dtype == g.dtype


def test_int64_offsets_path(monkeypatch):
    # the 64-bit offset variant (tensors over 2**31 elements) computes the same values
    monkeypatch.setattr(ew, "INT64_MIN_NUMEL", 0)
    x = _data((6, 5, 40), torch.bfloat16)
    for amax in _amaxes(x).values():
        _same(
            ew.fake_quant_int(x, amax, 8, False, True), ref.fake_quant_int(x, amax, 8, False, True)
        )
        _same(ew.fake_quant_fp8(x, amax, 4), ref.fake_quant_fp8(x, amax, 4))
