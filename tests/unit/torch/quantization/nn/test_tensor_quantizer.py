import pytest
import torch
from torch import nn

from modeloptim.torch.quantization.config import QuantizerAttributeConfig
from modeloptim.torch.quantization.formats import QuantizedCodes
from modeloptim.torch.quantization.nn import TensorQuantizer


def _ref_int8(x, amax):
    scale = torch.div(torch.tensor(127.0), amax)  # IEEE division, as DESIGN pins it
    return torch.clamp(torch.round(x * scale), -127, 127) / scale


def test_default_is_int8_per_tensor_and_needs_amax():
    q = TensorQuantizer()
    assert q.num_bits == 8
    assert q.axis is None
    assert q.maxbound == 127
    assert q.narrow_range
    with pytest.raises(RuntimeError, match="has no amax"):
        q(torch.randn(3))
    q.name = "layer1.input_quantizer"
    with pytest.raises(RuntimeError, match=r"layer1\.input_quantizer"):
        q(torch.randn(3))


def test_calibrate_then_quantize_per_channel_and_state_dict_roundtrip():
    w = torch.randn(6, 10)
    q = TensorQuantizer(QuantizerAttributeConfig(num_bits=8, axis=0))
    q.disable_quant()
    q.enable_calib()
    assert q(w) is w  # calibration only: the input passes through
    q(w * 0.5)
    q.load_calib_amax()
    q.disable_calib()
    q.enable_quant()
    amax = w.abs().amax(dim=1, keepdim=True)
    assert torch.equal(q.amax, amax)
    assert torch.equal(q(w), _ref_int8(w, amax))
    sd = q.state_dict()
    assert set(sd) == {"_amax"}
    q2 = TensorQuantizer({"num_bits": 8, "axis": 0})
    q2.load_state_dict(sd)
    assert torch.equal(q2.amax, amax)
    assert torch.equal(q2(w), q(w))


def test_disable_returns_same_object_and_enable_restores():
    q = TensorQuantizer(amax=1.0)
    x = torch.randn(4)
    q.disable()
    assert not q.is_enabled
    assert q(x) is x
    q.enable()
    assert torch.equal(q(x), _ref_int8(x, torch.tensor(1.0)))
    q.set_from_attribute_config({"enable": False})
    assert q(x) is x
    assert q.num_bits == 8


def test_calib_and_quant_together_uses_batch_amax_when_uncalibrated():
    q = TensorQuantizer()
    q.enable_calib()
    x = torch.randn(5, 5)
    assert torch.equal(q(x), _ref_int8(x, x.abs().max()))


def test_pre_quant_scale_and_real_quant():
    q = TensorQuantizer({"num_bits": 8}, amax=2.0)
    q.pre_quant_scale = torch.tensor([0.5, 2.0, 1.0])
    x = torch.randn(4, 3)
    xs = x * torch.tensor([0.5, 2.0, 1.0])
    assert torch.equal(q(x), _ref_int8(xs, torch.tensor(2.0)))
    assert "_pre_quant_scale" in q.state_dict()
    q.fake_quant = False
    codes = q(x)
    assert isinstance(codes, QuantizedCodes)
    assert codes.codes.dtype == torch.int8
    assert torch.equal(codes.dequantize(), _ref_int8(xs, torch.tensor(2.0)))
    q.fake_quant = True
    q.pre_quant_scale = torch.ones(5)
    with pytest.raises(ValueError, match=r"pre_quant_scale of shape \(5,\) does not broadcast"):
        q(x)


def test_dynamic_formats_need_no_amax():
    x = torch.randn(4, 64)
    for attrs in (
        {"num_bits": "mxfp4"},
        {"num_bits": 8, "type": "dynamic"},
        {"num_bits": 4, "block_sizes": {-1: 16, "type": "dynamic"}},
        {"num_bits": "nvfp4", "type": "dynamic"},
    ):
        q = TensorQuantizer(attrs)
        y = q(x)
        assert y.shape == x.shape
        assert not torch.equal(y, x)
        assert q.format.fake_quant(x) is not None


def test_set_from_attribute_config_partial_and_layout_reset():
    q = TensorQuantizer({"num_bits": 8, "axis": 0})
    q.set_from_attribute_config({"num_bits": 4, "block_sizes": {-1: 128}})
    assert q.axis is None
    assert q.block_sizes == {-1: 128}
    q.set_from_attribute_config({"unsigned": True})
    assert q.block_sizes == {-1: 128}
    assert q.unsigned
    with pytest.raises(ValueError, match="num_bits"):
        q.set_from_attribute_config({"num_bits": (3, 3)})
    assert q.num_bits == 4  # unchanged after a rejected update
    with pytest.raises(TypeError, match="attribute_cfg"):
        q.set_from_attribute_config(8)  # type: ignore[arg-type]


def test_bad_amax_values():
    q = TensorQuantizer()
    with pytest.raises(ValueError, match="amax: must be non-negative"):
        q.amax = torch.tensor([-1.0])
    with pytest.raises(ValueError, match="amax: values must be finite"):
        q.amax = float("nan")
    with pytest.raises(TypeError, match="amax"):
        q.amax = "big"  # type: ignore[assignment]
    assert q.amax is None


def test_tiny_amax_gives_zero_and_extra_repr():
    q = TensorQuantizer({"num_bits": "nvfp4"}, amax=torch.tensor(2.5))
    assert "nvfp4 block16 amax=2.5" in repr(q)
    q.amax = 0.0
    assert torch.equal(q(torch.randn(2, 16)), torch.zeros(2, 16))
    q.disable()
    assert "disabled" in repr(q)
    r = repr(TensorQuantizer({"num_bits": 8, "axis": 0}, amax=torch.tensor([[1.0], [3.0]])))
    assert "int8 per-channel(axis=0) amax=[1, 3](2)" in r


def test_learn_amax_is_parameter_and_gets_gradient():
    q = TensorQuantizer({"num_bits": 8, "learn_amax": True}, amax=1.0)
    assert isinstance(q.amax, nn.Parameter)
    assert "_amax" in dict(q.named_parameters())
    x = torch.tensor([0.5, 2.0, -3.0], requires_grad=True)
    q(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 0.0, 0.0]))
    assert q.amax.grad.item() == pytest.approx(0.0)  # +1 (x=2) - 1 (x=-3)


def test_reset_and_export_amax():
    q = TensorQuantizer(amax=3.0)
    assert torch.equal(q.export_amax(), torch.tensor(3.0))
    q.reset_amax()
    assert q.amax is None
    assert "_amax" not in q.state_dict()
    assert TensorQuantizer({"num_bits": "mxfp8"}).export_amax() is None
    with pytest.raises(RuntimeError, match="no calibrator"):
        TensorQuantizer({"num_bits": "mxfp8"}).load_calib_amax()
    with pytest.raises(RuntimeError, match="collected no data"):
        TensorQuantizer().load_calib_amax()


def test_calib_rejects_nan_naming_the_quantizer():
    q = TensorQuantizer()
    q.name = "fc1.input_quantizer"
    q.enable_calib()
    q.disable_quant()
    with pytest.raises(ValueError, match=r"'fc1\.input_quantizer'.*NaN or Inf"):
        q(torch.tensor([1.0, float("nan")]))
    assert q.amax is None


def test_forward_does_not_modify_input():
    for attrs in (
        {"num_bits": 8},
        {"num_bits": "nvfp4"},
        {"num_bits": "mxfp4"},
        {"num_bits": (4, 3)},
        {"num_bits": 4, "block_sizes": {-1: 16}},
    ):
        x = torch.randn(4, 64)
        x0 = x.clone()
        q = TensorQuantizer(attrs, amax=None)
        q.enable_calib()
        q(x)
        assert torch.equal(x, x0), attrs


def test_json_style_block_sizes_keys_become_ints():
    q = TensorQuantizer({"num_bits": 4, "block_sizes": {"-1": 32, "type": "dynamic"}})
    assert q.block_sizes == {-1: 32, "type": "dynamic"}


def test_setting_amax_of_same_shape_keeps_the_tensor_object():
    q = TensorQuantizer({"num_bits": 8, "learn_amax": True}, amax=1.0)
    param = q.amax
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    q.amax = 2.0
    assert q.amax is param
    assert float(param.detach()) == 2.0
    assert opt.param_groups[0]["params"][0] is param
    q.amax = torch.tensor([1.0, 2.0])  # new shape: a new tensor
    assert q.amax.shape == (2,)
    assert isinstance(q.amax, nn.Parameter)


def test_empty_batches_pass_through():
    for attrs in ({"num_bits": 8, "type": "dynamic"}, {"num_bits": "mxfp4"}, {"num_bits": 8}):
        q = TensorQuantizer(attrs, amax=None if attrs.get("num_bits") != 8 else 1.0)
        q.enable_calib()
        out = q(torch.empty(0, 32))
        assert out.shape == (0, 32)
    q = TensorQuantizer()
    q.enable_calib()
    q.disable_quant()
    q(torch.empty(0, 8))
    q(torch.ones(2, 8) * 3)
    q.load_calib_amax()
    assert float(q.amax) == 3.0


def test_static_nvfp4_calibrates_per_block_amax():
    q = TensorQuantizer(
        {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)}}
    )
    w = torch.randn(8, 64)
    q.enable_calib()
    q.disable_quant()
    q(w)
    q.load_calib_amax()
    q.disable_calib()
    q.enable_quant()
    assert torch.equal(q.amax, w.reshape(-1, 16).abs().amax(-1, keepdim=True))
    # with the exact block amax, static equals dynamic blocks with global amax = max
    dyn = TensorQuantizer({"num_bits": "nvfp4"}, amax=w.abs().amax())
    assert torch.equal(q(w), dyn(w))
    assert "nvfp4 block16 amax=" in repr(q)


def test_model_dtype_casts_keep_amax_float32():
    amax = torch.tensor([[1.2345678], [3.3333333]])
    model = nn.Sequential(nn.Linear(4, 2))
    model.q = TensorQuantizer({"num_bits": 8, "axis": 0}, amax=amax)
    model.q.pre_quant_scale = torch.tensor([1.0001, 2.0, 3.0, 4.0])
    model.to(torch.bfloat16)
    assert model[0].weight.dtype == torch.bfloat16
    assert model.q.amax.dtype == torch.float32
    assert torch.equal(model.q.amax, amax)
    assert model.q.pre_quant_scale.dtype == torch.float32
    model.half()
    assert torch.equal(model.q.amax, amax)
    assert model.state_dict()["q._amax"].dtype == torch.float32


def test_deepcopy_and_pickle_roundtrip():
    import copy
    import io

    x = torch.randn(4, 64)
    for attrs, amax in (
        ({"num_bits": 8, "axis": 0}, torch.rand(4, 1) + 1),
        ({"num_bits": "nvfp4"}, torch.tensor(3.0)),
        ({"num_bits": "mxfp4"}, None),
        ({"num_bits": 8, "calibrator": "histogram"}, torch.tensor(2.0)),
    ):
        q = TensorQuantizer(attrs, amax=amax)
        q.enable_calib()
        q(x)
        c = copy.deepcopy(q)
        buf = io.BytesIO()
        torch.save(q, buf)
        buf.seek(0)
        p = torch.load(buf, weights_only=False)
        for other in (c, p):
            assert torch.equal(other(x), q(x))
            assert repr(other) == repr(q)
