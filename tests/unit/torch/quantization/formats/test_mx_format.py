import pytest
import torch
from fq_refs import DTYPES, MX_ELEMS, make_inputs, mx_exponent, ref_mx

from modeloptim.torch.quantization.formats import MXFormat, resolve_format

ELEMS = ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"]


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("shape", [(32,), (4, 64), (3, 70)])  # 70: padded last block
@pytest.mark.parametrize("dtype", DTYPES)
def test_mx_bit_exact_with_reference(elem, shape, dtype):
    x = make_inputs(shape, dtype)
    fmt = MXFormat(elem)
    out = fmt.fake_quant(x)
    assert out.dtype == dtype
    assert out.shape == x.shape
    assert torch.equal(out, ref_mx(x.float(), elem).to(dtype))
    assert torch.equal(fmt.quantize(x).dequantize(), out)


@pytest.mark.parametrize("elem", ELEMS)
def test_mx_exponent_exact_at_powers_of_two_and_huge_range(elem):
    emax = MX_ELEMS[elem][1]
    amaxes = [0.0, 1e-38, 1e-30, emax, emax * 2**-10, emax * (1 + 2**-23), 3.0, 1e30]
    fmt = MXFormat(elem)
    for a in amaxes:
        v = torch.zeros(1, 32)
        v[0, 0] = a
        got = int(fmt.exponent(v).item())
        assert got == mx_exponent(a, emax), (elem, a)


def test_mx_codes_and_scale_storage():
    x = make_inputs((2, 64), torch.float32)
    q = MXFormat("e2m1").quantize(x)
    assert q.codes.dtype == torch.uint8
    assert int(q.codes.max()) <= 15
    assert q.scales["exponent"].dtype == torch.uint8
    assert q.scales["exponent"].shape == (4, 1)
    assert MXFormat("e4m3").quantize(x).codes.dtype == torch.float8_e4m3fn
    assert MXFormat("int8").quantize(x).codes.dtype == torch.int8
    assert MXFormat("e2m1").bits_per_element == 4.25
    assert MXFormat("e3m2").bits_per_element == 6.25


def test_mx_all_zero_block():
    x = torch.zeros(2, 32)
    x[1] = torch.randn(32)
    out = MXFormat("e2m1").fake_quant(x)
    assert torch.equal(out[0], torch.zeros(32))
    assert torch.equal(out[1], ref_mx(x[1:], "e2m1")[0])


def test_mx_float64_relative_error_bound():
    x = make_inputs((64, 32), torch.float32, kind="plain")
    for elem, mbits in [("e4m3", 3), ("e3m2", 2), ("e2m1", 1)]:
        out = MXFormat(elem).fake_quant(x).double()
        xb = x.double()
        p = 2.0 ** torch.tensor(
            [mx_exponent(float(r.abs().max()), MX_ELEMS[elem][1]) for r in x]
        ).double().reshape(-1, 1)
        # normal range: half a mantissa step relative; subnormal: half the smallest step
        emin = {"e4m3": -6, "e3m2": -2, "e2m1": 0}[elem]
        tol = torch.maximum(xb.abs() * 2.0 ** -(mbits + 1), 2.0 ** (emin - mbits - 1) * p)
        assert ((out - xb).abs() <= tol * (1 + 1e-6)).all(), elem


def test_resolve_and_bad_block():
    assert resolve_format({"num_bits": "mxfp6"}).name == "mxfp6"
    with pytest.raises(ValueError, match="elem"):
        MXFormat("e9m9")
    with pytest.raises(ValueError, match="block_sizes"):
        resolve_format({"num_bits": (2, 1), "block_sizes": {-1: 32, "scale_bits": (8, 0)}})
