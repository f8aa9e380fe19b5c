"""The PyTorch reference of the pinned numerics against float64 math and hand-computed cases.

The kernel tests compare the kernels bit-exactly with this reference; these tests make sure the
reference itself computes DESIGN.md §2 (independent float64 formulas, exact known values).
"""

import pytest
import torch

from modeloptim.torch.quantization.triton import reference as ref


def test_int_hand_computed():
    x = torch.tensor([0.0, 0.1, -0.26, 1.0, 2.0, -3.0, 0.05])
    # amax 1, 2 bits narrow: bound 1, scale 1 -> round half even then clamp to [-1, 1]
    out = ref.fake_quant_int(x, torch.tensor(1.0), 2, False, True)
    assert out.tolist() == [0.0, 0.0, -0.0, 1.0, 1.0, -1.0, 0.0]
    # 4 bits, not narrow: bound 7, lo -8; amax 7 -> scale 1
    x = torch.tensor([2.5, 3.5, -9.0, 7.6])
    out = ref.fake_quant_int(x, torch.tensor(7.0), 4, False, False)
    assert out.tolist() == [2.0, 4.0, -8.0, 7.0]
    # unsigned 8 bits: [0, 255]
    out = ref.fake_quant_int(torch.tensor([-1.0, 0.5, 300.0]), torch.tensor(255.0), 8, True, True)
    assert out.tolist() == [0.0, 0.0, 255.0]


def test_int_against_float64():
    x = torch.randn(64, 33) * 4
    amax = x.abs().amax(dim=1, keepdim=True) * 0.8
    out = ref.fake_quant_int(x, amax, 8, False, True).double()
    scale = 127.0 / amax.double()
    expect = torch.clamp(torch.round(x.double() * scale), -127, 127) / scale
    # float32 rounding of x*scale may flip a tie; everything else within float32 rounding
    err = (out - expect).abs()
    assert (err <= 1e-6 * expect.abs().clamp(min=1)).float().mean() > 0.999
    assert torch.all(err <= (1.0 / scale) + 1e-6)


def test_tiny_amax_gives_zeros():
    x = torch.randn(4, 8)
    amax = torch.tensor([[1.0], [2.0**-25], [2.0**-24], [3.0]])
    out = ref.fake_quant_int(x, amax, 8, False, True)
    assert torch.all(out[1:3] == 0)
    assert torch.all(out[0] != 0) or torch.any(x[0] != 0)
    assert torch.all(ref.fake_quant_fp8(x, amax, 4)[1:3] == 0)


@pytest.mark.parametrize("elem", ["e3m2", "e2m3", "e2m1"])
def test_grid_rounding_matches_enumerated_grid(elem):
    emin, mbits, vmax = ref.MINIFLOATS[elem]
    # enumerate every non-negative value of the format
    grid = {0.0}
    for e in range(emin, 20):
        for m in range(2**mbits):
            grid.add((1 + m / 2**mbits) * 2.0**e)
    for m in range(1, 2**mbits):
        grid.add(m / 2**mbits * 2.0**emin)
    values = torch.tensor(sorted(v for v in grid if v <= vmax), dtype=torch.float64)
    x = torch.linspace(-vmax * 1.3, vmax * 1.3, 4001, dtype=torch.float64)
    got = ref.round_to_grid(x.float(), elem).double()
    dist = (x.abs()[:, None] - values[None, :]).abs()
    nearest = values[dist.argmin(dim=1)]
    best = dist.min(dim=1).values
    # where two grid points tie, either is nearest; otherwise the result is the unique nearest
    close = (dist - best[:, None]).abs() < 1e-12
    ties = close.sum(dim=1) > 1
    assert torch.equal(got.abs()[~ties], nearest[~ties])
    assert torch.all((got.abs()[ties][:, None] == values[None, :]).any(dim=1))
    assert torch.all(torch.sign(got[got != 0]) == torch.sign(x[got != 0]))


def test_grid_rounding_ties_to_even():
    # e2m1 grid around 2..4 has step 1: 2.5 -> 2, 3.5 -> 4; around 0.5..1 step 0.5: 0.25 -> 0
    x = torch.tensor([2.5, 3.5, 0.25, 0.75, 5.0, 7.0, -1.25])
    assert ref.round_to_grid(x, "e2m1").tolist() == [2.0, 4.0, 0.0, 1.0, 4.0, 6.0, -1.0]


def test_nvfp4_hand_computed():
    # global amax 2688 -> scale_2 = 1; block amax 6 -> s = 1; elements round on the E2M1 grid
    x = torch.zeros(2, 16)
    x[0, :4] = torch.tensor([6.0, 2.4, -0.3, 1.2])
    x[1, :2] = torch.tensor([12.0, 5.0])  # amax 12 -> s = 2 -> 5/2 = 2.5 -> 2 -> 4
    out = ref.fake_quant_nvfp4(x, torch.tensor(2688.0))
    assert out[0, :4].tolist() == [6.0, 2.0, -0.5, 1.0]
    assert out[1, :2].tolist() == [12.0, 4.0]
    assert torch.all(out[:, 4:] == 0)


def test_nvfp4_against_float64():
    x = torch.randn(128, 16) * torch.logspace(-2, 2, 128)[:, None]
    ga = x.abs().max()
    out = ref.fake_quant_nvfp4(x, ga).double()
    scale_2 = ga.double() / 2688
    s = (x.abs().amax(1, keepdim=True).double() / (6 * scale_2)).clamp(2**-9, 448)
    s = s.float().to(torch.float8_e4m3fn).double()
    d = s * scale_2
    # every output is a grid value times d, and within half the local step of x
    q = out / d
    assert torch.all(
        (q.abs()[:, :, None] - torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=torch.float64))
        .abs()
        .min(-1)
        .values
        < 1e-5
    )
    err = (out - x.double()).abs() / d
    assert torch.all(err[(x.double().abs() / d) <= 6] <= 1.0 + 1e-6)


def test_mx_exponent_exact_near_powers_of_two():
    # block amax just above elem_max * 2**k needs exponent k + 1 (float32 log2 says k)
    amax = torch.tensor(
        [
            6.0 * 2**20,
            torch.nextafter(torch.tensor(6.0 * 2**20), torch.tensor(1e30)).item(),
            0.0,
            1e-45,
        ]
    )
    e = ref.mx_exponent(amax.float(), "e2m1")
    assert e.tolist() == [20, 21, -127, -127]


@pytest.mark.parametrize("elem", ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"])
def test_mx_against_float64(elem):
    x = torch.randn(64, 32) * torch.logspace(-3, 3, 64)[:, None]
    out = ref.fake_quant_mx(x, elem).double()
    amax = x.abs().amax(1, keepdim=True).double()
    e = torch.ceil(torch.log2(amax / ref.MX_ELEM_MAX[elem]))
    scale = 2.0**e
    # the block max lands within the element range and every error is under one local step
    assert torch.all(out.abs().amax(1, keepdim=True) <= ref.MX_ELEM_MAX[elem] * scale)
    rel = (out - x.double()).abs() / scale
    limit = {"e4m3": 32.0, "e5m2": 8192.0, "e3m2": 4.0, "e2m3": 0.25, "e2m1": 1.0, "int8": 1 / 128}[
        elem
    ]
    assert torch.all(rel <= limit)
    if elem == "int8":
        assert torch.all((out / scale * 64).round() == out / scale * 64)


def test_ste_backward_masks():
    x = torch.tensor([-2.0, -1.0, 0.5, 1.0, 3.0])
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ref.ste_backward(x, g, torch.tensor(1.0)).tolist() == [0.0, 2.0, 3.0, 4.0, 0.0]
