from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from modeloptim.torch.opt.dynamic import DynamicModule, dynamic_class, swap_class


def _halve(module: nn.Module, w: torch.Tensor) -> torch.Tensor:
    return w * 0.5


class _Scaled(DynamicModule):
    """Test wrapper: doubles the output and exposes a halved weight during forward."""

    def _setup(self, factor: float = 2.0) -> None:
        self.register_buffer("factor", torch.tensor(factor))
        self.extra = nn.Identity()
        self.flag = True
        self._register_dynamic_attribute("weight", _halve)  # module level: picklable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.factor


def _linear() -> nn.Linear:
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(12.0).reshape(3, 4) / 10)
        lin.bias.copy_(torch.tensor([1.0, -1.0, 0.5]))
    return lin


def test_convert_swaps_class_and_keeps_identity_and_parameters():
    lin = _linear()
    weight = lin.weight
    ref_w = weight.detach().clone()
    x = torch.randn(5, 4, dtype=torch.float64).float()
    out = _Scaled.convert(lin, factor=3.0)
    assert out is lin
    assert isinstance(lin, nn.Linear)
    assert isinstance(lin, _Scaled)
    assert type(lin).__mro__[1:3] == (_Scaled, DynamicModule)
    assert lin.original_cls is nn.Linear
    assert lin._parameters["weight"] is weight  # stored parameter not replaced
    # forward sees the callback's halved weight, output tripled: independent float64 reference
    ref = (x.double() @ (ref_w.double() * 0.5).T + lin.bias.detach().double()) * 3.0
    torch.testing.assert_close(lin(x).double(), ref, rtol=1e-6, atol=1e-6)


def test_export_restores_plain_module_and_removes_additions():
    lin = _linear()
    keys_before = set(lin.state_dict())
    _Scaled.convert(lin)
    assert "factor" in lin.state_dict()
    plain = lin.export()
    assert plain is lin
    assert type(lin) is nn.Linear
    assert set(lin.state_dict()) == keys_before
    assert not hasattr(lin, "extra")
    assert not hasattr(lin, "flag")
    x = torch.randn(2, 4)
    torch.testing.assert_close(lin(x), x @ lin.weight.T + lin.bias)


def test_generated_class_is_cached_and_deepcopy_works():
    a, b = _linear(), _linear()
    _Scaled.convert(a)
    _Scaled.convert(b)
    assert type(a) is type(b) is dynamic_class(_Scaled, nn.Linear)
    c = copy.deepcopy(a)
    x = torch.randn(3, 4)
    torch.testing.assert_close(c(x), a(x))


def test_double_convert_and_bad_swap_rejected():
    lin = _linear()
    _Scaled.convert(lin)
    with pytest.raises(TypeError, match="already converted"):
        _Scaled.convert(lin)
    with pytest.raises(TypeError, match="new_cls"):
        swap_class(nn.ReLU(), nn.Linear)
    with pytest.raises(TypeError, match="module"):
        swap_class(object(), nn.Linear)  # type: ignore[arg-type]


def test_failed_setup_leaves_module_unchanged():
    class _Broken(DynamicModule):
        def _setup(self) -> None:
            self.extra = nn.Identity()
            raise RuntimeError("boom")

    lin = _linear()
    with pytest.raises(RuntimeError, match="boom"):
        _Broken.convert(lin)
    assert type(lin) is nn.Linear
    assert "extra" not in lin._modules


def test_dynamic_attribute_requires_stored_name():
    class _Bad(DynamicModule):
        def _setup(self) -> None:
            self._register_dynamic_attribute("nope", lambda m, v: v)

    lin = _linear()
    with pytest.raises(AttributeError, match="nope"):
        _Bad.convert(lin)
    assert type(lin) is nn.Linear


def test_pickle_roundtrip_rebuilds_generated_class():
    import pickle

    lin = _linear()
    _Scaled.convert(lin, factor=3.0)
    clone = pickle.loads(pickle.dumps(lin))
    assert type(clone) is type(lin)
    x = torch.randn(2, 4)
    torch.testing.assert_close(clone(x), lin(x))
    clone.export()
    assert type(clone) is nn.Linear
