"""quantize / calibrate / summary / fold / postprocess on small models, plus bad input."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.nn import QuantModule, TensorQuantizer

NEEDS_CORE: set[str] = set()  # presets the core formats cannot express yet (none now)
BUILT = [
    name
    for name, cfg in mtq.PRESETS.items()
    if name not in NEEDS_CORE
    # Presets whose algorithm changes weights/scales (AWQ, SmoothQuant...) are tested with
    # their algorithms (tests/unit/torch/quantization/algorithms/); here: max / none only.
    and mtq.QuantizeConfig.parse(cfg).algorithm.method in ("max", "none")
]
UNBUILT = [
    name
    for name, cfg in mtq.PRESETS.items()
    if name not in NEEDS_CORE
    and not mtq.calibration_algorithms.is_built(mtq.QuantizeConfig.parse(cfg).algorithm.method)
]
# Presets that only address layers an MLP does not have (KV cache, "*mlp*" names).
NO_MATCH_IN_MLP = {"FP8_KV_CFG", "NVFP4_KV_CFG", "NVFP4_MLP_ONLY_CFG", "NVFP4_MLP_WEIGHT_ONLY_CFG"}


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 24))


def _calib(batches: list[torch.Tensor]):
    def loop(model: nn.Module) -> None:
        for b in batches:
            model(b)

    return loop


def _int_fq(x: torch.Tensor, amax: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """DESIGN §2 INT rule written out (float32, same op order)."""
    bound = 2 ** (bits - 1) - 1
    # IEEE division (not reciprocal-multiply), as the pinned numerics require
    scale = torch.div(torch.tensor(float(bound)), amax.float())
    return torch.clamp(torch.round(x.float() * scale), -bound, bound) / scale


def _entry_cfg(preset: dict, pattern: str):
    """Last entry configuring ``pattern`` in a preset (None when disabled)."""
    found = None
    for e in preset["quant_cfg"]:
        if e["quantizer_name"] == pattern:
            found = e.get("cfg") if e.get("enable", True) else None
    return found


def _calibrated_quantizer(cfg, tensors: list[torch.Tensor]):
    """Reference quantizer: built directly from the attributes, amax from ``tensors``."""
    if cfg is None:
        return lambda t: t
    q = (
        mtq.SequentialQuantizer(*(TensorQuantizer(c) for c in cfg))
        if isinstance(cfg, list)
        else TensorQuantizer(cfg)
    )
    members = list(q) if isinstance(q, nn.Sequential) else [q]
    for m in members:
        m.disable_quant()
        m.enable_calib()
    for t in tensors:
        q(t)
    for m in members:
        m.load_calib_amax(strict=False)
        m.disable_calib()
        m.enable_quant()
    return q


def test_int8_mlp_matches_hand_computed_reference():
    model = _mlp()
    ref_model = copy.deepcopy(model)
    batches = [torch.randn(16, 40) for _ in range(3)]
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, _calib(batches))

    l0, l2 = ref_model[0], ref_model[2]
    x_cal = torch.cat(batches)
    amax_in0 = x_cal.abs().amax()
    amax_in2 = F.relu(l0(x_cal)).abs().amax()  # float activations (calibration runs in float)
    w0_amax = l0.weight.abs().amax(dim=1, keepdim=True)
    w2_amax = l2.weight.abs().amax(dim=1, keepdim=True)
    torch.testing.assert_close(model[0].input_quantizer.amax, amax_in0, rtol=0, atol=0)
    torch.testing.assert_close(model[2].input_quantizer.amax, amax_in2, rtol=0, atol=0)
    torch.testing.assert_close(model[0].weight_quantizer.amax, w0_amax, rtol=0, atol=0)
    assert model[2].weight_quantizer.amax.shape == (24, 1)

    x = torch.randn(8, 40)
    h = F.relu(
        _int_fq(x, amax_in0).double() @ _int_fq(l0.weight.detach(), w0_amax).double().T
        + l0.bias.detach().double()
    )
    ref = (
        _int_fq(h.float(), amax_in2).double() @ _int_fq(l2.weight.detach(), w2_amax).double().T
        + l2.bias.detach().double()
    )
    out = model(x)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, ref_model(x), atol=1e-6)  # it really is quantized


@pytest.mark.parametrize("name", BUILT)
def test_each_built_preset_on_mlp_matches_direct_quantizers(name):
    preset = mtq.get_preset(name)
    model = _mlp()
    ref_model = copy.deepcopy(model)
    batches = [torch.randn(16, 40) for _ in range(2)]
    mtq.quantize(model, preset, _calib(batches))
    x = torch.randn(8, 40)
    if name in NO_MATCH_IN_MLP:
        assert not any(q.is_enabled for _, q in _tensor_quantizers(model))
        torch.testing.assert_close(model(x), ref_model(x), rtol=0, atol=0)
        return
    w_cfg = _entry_cfg(preset, "*weight_quantizer")
    a_cfg = _entry_cfg(preset, "*input_quantizer")
    l0, l2 = ref_model[0], ref_model[2]
    x_cal = torch.cat(batches)
    qin0 = _calibrated_quantizer(a_cfg, [x_cal[:16], x_cal[16:]])
    qin2 = _calibrated_quantizer(a_cfg, [F.relu(l0(x_cal[:16])), F.relu(l0(x_cal[16:]))])
    with torch.no_grad():
        h = F.relu(F.linear(qin0(x), _calibrated_quantizer(w_cfg, [l0.weight])(l0.weight), l0.bias))
        ref = F.linear(qin2(h), _calibrated_quantizer(w_cfg, [l2.weight])(l2.weight), l2.bias)
        out = model(x)
        float_out = ref_model(x)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    assert not torch.equal(out, float_out)
    rel = (out - float_out).norm() / float_out.norm()
    assert rel < 0.35, f"{name}: relative error {rel:.3f}"


def _tensor_quantizers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, TensorQuantizer)]


@pytest.mark.parametrize("name", UNBUILT)
def test_unbuilt_algorithm_raises_before_touching_model(name):
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        NotImplementedError, match=mtq.QuantizeConfig.parse(mtq.PRESETS[name]).algorithm.method
    ):
        mtq.quantize(model, mtq.PRESETS[name], _calib([torch.randn(4, 40)]))
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    assert model.state_dict().keys() == before.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_quantize_accepts_preset_name_and_rejects_unknown_name():
    model = _mlp()
    with pytest.raises(ValueError, match="unknown preset name 'INT7_CFG'"):
        mtq.quantize(model, "INT7_CFG")
    assert not any(isinstance(m, QuantModule) for m in model.modules())
    mtq.quantize(model, "int8_weight_only")
    assert model[0].weight_quantizer.is_enabled
    assert not model[0].input_quantizer.is_enabled


def test_misspelled_attribute_names_field_and_leaves_model():
    model = _mlp()
    bad = {"quant_cfg": {"*weight_quantizer": {"num_bits": 8, "axsi": 0}}, "algorithm": "max"}
    with pytest.raises(ValueError, match=r"'\*weight_quantizer'.*axsi"):
        mtq.quantize(model, bad)
    assert type(model[0]) is nn.Linear


def test_forward_loop_error_restores_model_and_propagates():
    model = _mlp()
    ref = copy.deepcopy(model)
    keys = set(model.state_dict())

    def loop(m):
        m(torch.randn(2, 40))
        raise RuntimeError("data loader broke")

    with pytest.raises(RuntimeError, match="data loader broke"):
        mtq.quantize(model, mtq.INT8_DEFAULT_CFG, loop)
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    assert set(model.state_dict()) == keys
    x = torch.randn(3, 40)
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_meta_device_model_rejected_before_change():
    with torch.device("meta"):
        model = _mlp()
    with pytest.raises(ValueError, match="meta device"):
        mtq.quantize(model, mtq.INT8_WEIGHT_ONLY_CFG)
    assert type(model[0]) is nn.Linear


def test_bad_model_forward_loop_and_double_quantize():
    with pytest.raises(TypeError, match="model"):
        mtq.quantize("not a model", mtq.FP8_DEFAULT_CFG)  # type: ignore[arg-type]
    model = _mlp()
    with pytest.raises(TypeError, match="forward_loop"):
        mtq.quantize(model, mtq.FP8_DEFAULT_CFG, forward_loop=42)  # type: ignore[arg-type]
    mtq.quantize(model, mtq.INT8_WEIGHT_ONLY_CFG)
    with pytest.raises(ValueError, match="already quantized"):
        mtq.quantize(model, mtq.INT8_WEIGHT_ONLY_CFG)


def test_activation_quantizers_without_forward_loop_is_an_error():
    model = _mlp()
    with pytest.raises(ValueError, match="forward_loop"):
        mtq.quantize(model, mtq.INT8_DEFAULT_CFG)
    assert type(model[0]) is nn.Linear


def test_no_registered_layer_warns():
    with pytest.warns(UserWarning, match="no layer"):
        mtq.quantize(nn.Sequential(nn.ReLU()), mtq.INT8_WEIGHT_ONLY_CFG)


def test_calibrate_recomputes_amax_and_restores_on_error():
    model = _mlp()
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, _calib([torch.randn(4, 40)]))
    big = torch.randn(4, 40) * 10
    mtq.calibrate(model, "max", _calib([big]))
    torch.testing.assert_close(model[0].input_quantizer.amax, big.abs().amax())
    old = model[0].input_quantizer.amax.clone()

    def broken(m):
        m(torch.randn(4, 40) * 100)
        raise KeyError("stop")

    with pytest.raises(KeyError):
        mtq.calibrate(model, forward_loop=broken)
    torch.testing.assert_close(model[0].input_quantizer.amax, old, rtol=0, atol=0)
    assert model[0].input_quantizer._if_quant
    assert not model[0].input_quantizer._if_calib
    with pytest.raises(ValueError, match="not quantized"):
        mtq.calibrate(_mlp(), forward_loop=_calib([big]))
    with pytest.raises(NotImplementedError, match="svdquant"):
        mtq.calibrate(model, {"method": "svdquant"}, _calib([big]))


def test_enable_disable_quantizer_wildcards():
    model = _mlp()
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, _calib([torch.randn(4, 40)]))
    assert mtq.disable_quantizer(model, "*input_quantizer") == 2
    assert not model[0].input_quantizer.is_enabled
    assert model[0].weight_quantizer.is_enabled
    assert mtq.enable_quantizer(model, "0.input_quantizer") == 1
    assert model[0].input_quantizer.is_enabled
    assert not model[2].input_quantizer.is_enabled
    assert mtq.disable_quantizer(model, lambda n: n.startswith("2.")) == 3
    with pytest.warns(UserWarning, match="matches no quantizer"):
        assert mtq.disable_quantizer(model, "*lm_head*") == 0


def test_print_quant_summary_rows(capsys):
    model = _mlp()
    mtq.quantize(model, mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG)
    rows = mtq.print_quant_summary(model)
    printed = capsys.readouterr().out
    assert "weight_quantizer" in printed
    assert "int4" in printed
    by_key = {(r["module"], r["quantizer"]): r for r in rows}
    assert len(rows) == 6
    w0 = by_key[("0", "weight_quantizer")]
    assert w0["enabled"]
    assert w0["format"].startswith("int4")
    assert w0["amax_shape"] == (64, 1)  # 64 rows x one 128-block (40 cols padded)
    assert not by_key[("0", "input_quantizer")]["enabled"]
    amax = model[0].weight_quantizer.amax
    assert w0["amax"] == f"[{amax.min().item():.4g}, {amax.max().item():.4g}] x64"


def test_fold_weight_bakes_quantization_and_keeps_outputs():
    model = _mlp()
    mtq.quantize(model, mtq.INT8_WEIGHT_ONLY_CFG)
    x = torch.randn(5, 40)
    before = model(x)
    w_amax = model[0].weight_quantizer.amax.clone()
    raw = model[0]._parameters["weight"].detach().clone()
    assert mtq.fold_weight(model) == 2
    assert not model[0].weight_quantizer.is_enabled
    torch.testing.assert_close(model[0].weight.detach(), _int_fq(raw, w_amax), rtol=0, atol=0)
    torch.testing.assert_close(model(x), before, rtol=1e-6, atol=1e-6)


def test_postprocess_amax_applies_function():
    model = _mlp()
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, _calib([torch.randn(4, 40)]))
    old = model[2].weight_quantizer.amax.clone()
    assert mtq.postprocess_amax(model, "*weight_quantizer", lambda a: a * 0.5) == 2
    torch.testing.assert_close(model[2].weight_quantizer.amax, old * 0.5)
    with pytest.warns(UserWarning, match="key"):
        mtq.postprocess_amax(model, "*nothing*", lambda a: a)


def test_state_dict_roundtrip_into_fresh_quantized_model():
    model = _mlp()
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, _calib([torch.randn(8, 40)]))
    fresh = copy.deepcopy(_mlp())
    cfg = mtq.get_preset("INT8_DEFAULT_CFG")
    cfg["algorithm"] = None
    mtq.quantize(fresh, cfg)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(4, 40)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()


@pytest.mark.parametrize("name", BUILT)
def test_each_built_preset_on_cnn(name):
    model = _cnn()
    ref = copy.deepcopy(model)
    batches = [torch.randn(4, 3, 12, 12) for _ in range(2)]
    mtq.quantize(model, mtq.PRESETS[name], _calib(batches))
    x = torch.randn(2, 3, 12, 12)
    out, float_out = model(x), ref(x)
    assert torch.isfinite(out).all()
    bn = model[1]
    assert isinstance(bn, QuantModule)
    assert not bn.input_quantizer.is_enabled
    assert not bn.output_quantizer.is_enabled  # parent_class
    if name in NO_MATCH_IN_MLP:
        torch.testing.assert_close(out, float_out, rtol=0, atol=0)
        return
    assert model[0].weight_quantizer.is_enabled
    assert model[4].weight_quantizer.is_enabled
    acts = _entry_cfg(mtq.PRESETS[name], "*input_quantizer") is not None
    assert model[3].input_quantizer.is_enabled == acts  # pooling input follows *input_quantizer
    if mtq.PRESETS[name]["quant_cfg"][0]["cfg"] == {"num_bits": 8, "axis": 0}:
        w = ref[0].weight.detach()
        amax = w.abs().amax(dim=(1, 2, 3), keepdim=True)
        torch.testing.assert_close(model[0].weight_quantizer.amax, amax, rtol=0, atol=0)
    rel = (out - float_out).norm() / float_out.norm()
    assert 0 < rel < 0.5, f"{name}: relative error {rel:.3f}"


@pytest.mark.parametrize("name", UNBUILT)
def test_unbuilt_presets_leave_cnn_unchanged(name):
    model = _cnn()
    types = [type(m) for m in model]
    with pytest.raises(NotImplementedError, match="not implemented yet"):
        mtq.quantize(model, mtq.PRESETS[name], _calib([torch.randn(2, 3, 12, 12)]))
    assert [type(m) for m in model] == types
    assert not any(isinstance(m, TensorQuantizer) for m in model.modules())


def test_quantized_model_pickles_with_torch_save(tmp_path):
    model = _mlp()
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, _calib([torch.randn(8, 40)]))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    x = torch.randn(3, 40)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert type(loaded[0]) is type(model[0])
