"""Core ``MXFormat`` (PyTorch path) and the Triton MX kernel agree on blocks holding inf/NaN.

The kernel runs in Triton's CPU interpreter (conftest.py). Before the fix, core took the
block exponent of an inf block from ``torch.frexp(inf)`` (unspecified; 0 on CPU) and left the
finite elements of a NaN block finite; now both give exponent 127 / an all-NaN block.
"""

import pytest
import torch

triton = pytest.importorskip("triton")

from modeloptim.torch.quantization.formats import MXFormat  # noqa: E402
from modeloptim.torch.quantization.triton import blockwise as bw  # noqa: E402

ELEMS = ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"]


def _special_blocks(dtype: torch.dtype) -> torch.Tensor:
    """8 blocks of 32: +inf, -inf, NaN, inf and NaN, both infs, a finite one, 0s + inf."""
    torch.manual_seed(0)
    x = torch.randn(8, 32) * 3.0
    x[0, 5] = float("inf")
    x[1, 0] = float("-inf")
    x[2, 31] = float("nan")
    x[3, 1], x[3, 2] = float("inf"), float("nan")
    x[4, 7], x[4, 8] = float("inf"), float("-inf")
    x[6] = 0.0
    x[6, 3] = float("inf")
    x[7, :16] = 1e-30  # tiny finite values next to an inf: flushed to 0 by the 2**127 scale
    x[7, 20] = float("-inf")
    return x.to(dtype)


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    assert torch.equal(a.nan_to_num(), b.nan_to_num())  # inf == inf, finite bit for bit


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("elem", ELEMS)
def test_core_equals_kernel_on_inf_nan_blocks(elem, dtype):
    x = _special_blocks(dtype)
    core = MXFormat(elem)._fake_quant_view(x.float(), None).to(dtype)
    kernel = bw.fake_quant_mx(x, elem)
    assert kernel is not None
    _same(core, kernel)
    # the finite block (row 5) is untouched by its neighbours; NaN blocks are all NaN
    assert core[2].isnan().all()
    assert core[3].isnan().all()
    assert not core[[0, 1, 4, 5, 6, 7]].isnan().any()


def test_inf_block_uses_exponent_127_and_keeps_infinity():
    x = _special_blocks(torch.float32)
    fmt = MXFormat("e4m3")
    e = fmt.exponent(x)
    assert e[[0, 1, 4, 6, 7], 0].tolist() == [127] * 5
    out = fmt.fake_quant(x)
    assert out[0, 5] == float("inf")
    assert out[1, 0] == float("-inf")
    # finite elements of an inf block: |x| * 2**-127 rounds to 0 in E4M3
    finite = torch.isfinite(x[0])
    assert torch.equal(out[0][finite], torch.zeros(int(finite.sum())))


@pytest.mark.parametrize("elem", ["e4m3", "e2m1", "int8"])
def test_real_codes_round_trip_inf_and_nan_blocks(elem):
    x = _special_blocks(torch.float32)
    fmt = MXFormat(elem)
    q = fmt.quantize(x)
    assert q.scales["exponent"][2, 0] == 255
    assert q.scales["exponent"][3, 0] == 255
    assert q.scales["exponent"][0, 0] == 254  # 127 + bias
    _same(q.dequantize(), fmt.fake_quant(x))
