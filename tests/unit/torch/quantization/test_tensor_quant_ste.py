import pytest
import torch

from modeloptim.torch.quantization.formats import (
    Blocked,
    FP8Format,
    IntegerFormat,
    MXFormat,
    PerChannel,
    PerTensor,
)
from modeloptim.torch.quantization.tensor_quant import fake_quant_ste


def _clip_reference(x, amax_b):
    """Autograd of clamp(x, -amax, amax): the clipped STE by definition."""
    return torch.minimum(torch.maximum(x, -amax_b), amax_b)


def _data(shape, amax_b, dtype=torch.float32):
    x = torch.randn(shape) * 2
    # keep away from |x| == amax, where the clamp reference has a subgradient choice
    near = ((x.abs() - amax_b).abs() < 1e-3).expand_as(x)
    return torch.where(near, x * 0.5, x).to(dtype)


@pytest.mark.parametrize(
    "fmt_cls", [lambda g: IntegerFormat(8, granularity=g), lambda g: FP8Format(4, g)]
)
@pytest.mark.parametrize("case", ["tensor", "channel", "block"])
def test_ste_gradients_match_clamp_autograd(fmt_cls, case):
    shape = (6, 32)
    if case == "tensor":
        g, amax0 = PerTensor(), torch.tensor(1.5)
        amax_b = lambda a: a  # noqa: E731
    elif case == "channel":
        g, amax0 = PerChannel(0), torch.rand(6, 1) + 0.5
        amax_b = lambda a: a  # noqa: E731
    else:
        g, amax0 = Blocked({-1: 8}), torch.rand(24, 1) + 0.5
        amax_b = lambda a: a.reshape(6, 4, 1).expand(6, 4, 8).reshape(6, 32)  # noqa: E731
    x0 = _data(shape, amax_b(amax0))
    fmt = fmt_cls(g)
    gout = torch.randn(shape)

    x = x0.clone().requires_grad_(True)
    amax = amax0.clone().requires_grad_(True)
    fake_quant_ste(x, amax, fmt).backward(gout)

    xr = x0.clone().requires_grad_(True)
    ar = amax0.clone().requires_grad_(True)
    _clip_reference(xr, amax_b(ar)).backward(gout)
    assert torch.equal(x.grad, xr.grad)
    assert torch.allclose(amax.grad, ar.grad, atol=1e-5, rtol=1e-5)
    assert amax.grad.abs().sum() > 0  # some elements were clipped


def test_ste_bf16_and_forward_value():
    x = (torch.randn(4, 16) * 3).to(torch.bfloat16).requires_grad_(True)
    amax = torch.tensor(2.0)
    fmt = IntegerFormat(4)
    y = fake_quant_ste(x, amax, fmt)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, fmt.fake_quant(x.detach(), amax))
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16
    assert torch.equal(x.grad, (x.detach().float().abs() <= 2.0).to(torch.bfloat16))


def test_dynamic_formats_pass_gradient_through():
    x = torch.randn(2, 64, requires_grad=True)
    g = torch.randn(2, 64)
    fake_quant_ste(x, None, MXFormat("e2m1")).backward(g)
    assert torch.equal(x.grad, g)


def test_numeric_gradient_of_amax_on_smooth_region():
    # Finite differences of the clipped part: d/da sum(g * clamp(x, -a, a)) equals the STE grad.
    x0 = torch.tensor([0.3, 2.5, -3.0, 1.0, -0.2], dtype=torch.float64)
    gout = torch.tensor([1.0, 2.0, 0.5, -1.0, 3.0], dtype=torch.float64)
    a0, eps = 1.7, 1e-6
    f = lambda a: (gout * torch.clamp(x0, -a, a)).sum()  # noqa: E731
    numeric = (f(a0 + eps) - f(a0 - eps)) / (2 * eps)
    amax = torch.tensor(a0, requires_grad=True)
    fake_quant_ste(x0.float().requires_grad_(True), amax, IntegerFormat(8)).backward(gout.float())
    assert amax.grad.item() == pytest.approx(float(numeric), abs=1e-5)


def test_functional_modelopt_style_helpers():
    from modeloptim.torch.quantization.tensor_quant import fake_tensor_quant, scaled_e4m3

    x = torch.randn(6, 40)
    amax = x.abs().amax(1, keepdim=True)
    assert torch.equal(
        fake_tensor_quant(x, amax, 4),
        IntegerFormat(4, granularity=PerChannel(0)).fake_quant(x, amax),
    )
    assert torch.equal(
        scaled_e4m3(x, torch.tensor(2.0)), FP8Format(4).fake_quant(x, torch.tensor(2.0))
    )
    assert torch.equal(scaled_e4m3(x, 3.0, E=5, M=2), FP8Format(5).fake_quant(x, torch.tensor(3.0)))
    xg = x.clone().requires_grad_(True)
    fake_tensor_quant(xg, torch.tensor(1.0)).sum().backward()
    assert torch.equal(xg.grad, (x.abs() <= 1.0).float())
    with pytest.raises(ValueError, match="E, M"):
        scaled_e4m3(x, 1.0, E=4, M=2)
    with pytest.raises(ValueError, match="amax"):
        fake_tensor_quant(x, torch.ones(40))
