"""MoE export with partly disabled or differently quantized experts: exact reload or refusal."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq

from ._hf_moe import (
    family_model,
    lm_loop,
    logits,
    one_thread,
    qwen2_moe,
    safetensors_in,
    token_batches,
)

pytest.importorskip("transformers")

from modeloptim.torch.export import export_hf_checkpoint, load_hf_checkpoint
from modeloptim.torch.export.packers import UnsupportedFormatError

__all__ = ["one_thread"]  # the autouse fixture

IDS = token_batches(2, 16, seed=21, vocab=64)
P = "model.layers.0.mlp.experts"
NVFP4 = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}}


def _quantized(
    preset: str,
    before: list[dict[str, Any]] | None = None,
    after: tuple[str, ...] = (),
    family: str = "qwen2_moe",
) -> nn.Module:
    """``preset`` with extra ``quant_cfg`` entries, then ``after`` patterns disabled."""
    cfg = copy.deepcopy(mtq.PRESETS[preset])
    cfg["quant_cfg"] += before or []
    base = qwen2_moe(num_experts=4, layers=1) if family == "qwen2_moe" else family_model(family)
    model = mtq.quantize(base, cfg, lm_loop(IDS))
    for pattern in after:
        mtq.disable_quantizer(model, pattern)
    return model


def _logits(model: nn.Module) -> torch.Tensor:
    return logits(model, IDS[1])


def _json(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text())


def _export_and_reload(model: nn.Module, folder: Path) -> tuple[Any, nn.Module]:
    report = export_hf_checkpoint(model, folder)
    loaded = load_hf_checkpoint(folder)
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    return report, loaded


def _fp8_scale(amax: torch.Tensor) -> torch.Tensor:
    return (amax.float() / 448).reshape(())


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([], ("*experts.3.down_proj.weight_quantizer",)),  # after calibration, own name
        ([{"quantizer_name": "*down_proj_weight_quantizers.3", "enable": False}], ()),  # ModelOpt
    ],
    ids=["disable_quantizer", "modelopt_alias_in_config"],
)
def test_expert_weight_off_input_on_reloads_exactly(
    tmp_path: Path, before: list[dict[str, Any]], after: tuple[str, ...]
) -> None:
    model = _quantized("FP8_DEFAULT_CFG", before, after)
    layer = model.get_submodule(f"{P}.3.down_proj")
    assert not layer.weight_quantizer.is_enabled
    assert layer.input_quantizer.is_enabled
    raw = layer.weight.detach().clone()
    report, loaded = _export_and_reload(model, tmp_path / "c")
    t = safetensors_in(tmp_path / "c")
    key = f"{P}.3.down_proj"
    assert key in report.excluded
    assert torch.equal(t[f"{key}.weight"], raw)  # float, as an excluded layer
    assert f"{key}.weight_scale" not in t
    assert f"{key}.input_scale" not in t
    # the engines' one w2 input scale still covers expert 3 (its amax is part of the max)
    iq = layer.input_quantizer
    for e in range(3):
        torch.testing.assert_close(
            t[f"{P}.{e}.down_proj.input_scale"].float(), _fp8_scale(iq.amax), rtol=1e-6, atol=0
        )
    assert key in _json(tmp_path / "c", "hf_quant_config.json")["quantization"]["exclude_modules"]
    side = _json(tmp_path / "c", "modeloptim_quantizers.json")["float_layer_activations"]
    assert list(side) == [f"{key}.input_quantizer"]
    back = loaded.get_submodule(f"{key}.input_quantizer")
    assert back.is_enabled
    assert torch.equal(back.amax, iq.amax)


def test_nvfp4_expert_gate_up_weight_off(tmp_path: Path) -> None:
    model = _quantized("NVFP4_DEFAULT_CFG", after=("*experts.1.gate_up_proj.weight_quantizer",))
    report, _ = _export_and_reload(model, tmp_path / "c")
    assert {f"{P}.1.gate_proj", f"{P}.1.up_proj"} <= set(report.excluded)
    t = safetensors_in(tmp_path / "c")
    assert t[f"{P}.1.gate_proj.weight"].dtype == torch.float32
    assert t[f"{P}.1.down_proj.weight"].dtype == torch.uint8  # packed FP4 pairs


def test_whole_expert_off_is_float_without_scales(tmp_path: Path) -> None:
    model = _quantized("FP8_DEFAULT_CFG", after=("*experts.3.*",))
    report, _ = _export_and_reload(model, tmp_path / "c")
    t = safetensors_in(tmp_path / "c")
    for part in ("gate_proj", "up_proj", "down_proj"):
        assert f"{P}.3.{part}" in report.excluded
        assert f"{P}.3.{part}.input_scale" not in t
    assert _json(tmp_path / "c", "modeloptim_quantizers.json")["float_layer_activations"] == {}


def test_one_expert_in_another_format_exports_mixed_precision(tmp_path: Path) -> None:
    model = _quantized(
        "FP8_DEFAULT_CFG",
        [
            {"quantizer_name": "*experts.3.down_proj.weight_quantizer", "cfg": NVFP4},
            {"quantizer_name": "*experts.3.down_proj.input_quantizer", "cfg": NVFP4},
        ],
    )
    amax = {
        e: model.get_submodule(f"{P}.{e}.down_proj.input_quantizer").amax.clone() for e in range(4)
    }
    report, _ = _export_and_reload(model, tmp_path / "c")
    assert report.quant_algo == "MIXED_PRECISION"
    layers = _json(tmp_path / "c", "hf_quant_config.json")["quantization"]["quantized_layers"]
    assert layers[f"{P}.3.down_proj"] == {"quant_algo": "NVFP4", "group_size": 16}
    assert layers[f"{P}.0.down_proj"] == {"quant_algo": "FP8"}
    t = safetensors_in(tmp_path / "c")
    # one w2 scale for the FP8 experts (their max); the NVFP4 expert keeps its own global
    # scale amax / (6 * 448), not unified with an amax of another format
    fp8_top = torch.stack([amax[e] for e in range(3)]).amax()
    for e in range(3):
        torch.testing.assert_close(
            t[f"{P}.{e}.down_proj.input_scale"].float(), _fp8_scale(fp8_top), rtol=1e-6, atol=0
        )
    torch.testing.assert_close(
        t[f"{P}.3.down_proj.input_scale"].float(),
        (amax[3].float() / (6 * 448)).reshape(()),
        rtol=1e-6,
        atol=0,
    )


def test_nvfp4_expert_input_off_is_a_weight_only_algo(tmp_path: Path) -> None:
    # W4A16_NVFP4 differs from NVFP4 by name, so MIXED_PRECISION expresses the state
    model = _quantized("NVFP4_DEFAULT_CFG", after=("*experts.2.down_proj.input_quantizer",))
    _export_and_reload(model, tmp_path / "c")
    layers = _json(tmp_path / "c", "hf_quant_config.json")["quantization"]["quantized_layers"]
    assert layers[f"{P}.2.down_proj"]["quant_algo"] == "W4A16_NVFP4"
    assert layers[f"{P}.1.down_proj"]["quant_algo"] == "NVFP4"
    assert f"{P}.2.down_proj.input_scale" not in safetensors_in(tmp_path / "c")


def test_gpt_oss_expert_weight_off_keeps_transposed_rows_and_bias(tmp_path: Path) -> None:
    model = _quantized(
        "FP8_DEFAULT_CFG", after=("*experts.2.gate_up_proj.weight_quantizer",), family="gpt_oss"
    )
    experts = model.get_submodule(P)
    w = experts.gate_up_proj[2].detach().T.clone()  # [out, in], interleaved gate/up rows
    b = experts.gate_up_proj_bias[2].detach().clone()
    _export_and_reload(model, tmp_path / "c")
    t = safetensors_in(tmp_path / "c")
    assert torch.equal(t[f"{P}.2.gate_proj.weight"], w[0::2])
    assert torch.equal(t[f"{P}.2.up_proj.weight"], w[1::2])
    assert torch.equal(t[f"{P}.2.up_proj.bias"], b[1::2])


def test_w4a8_expert_weight_off_before_calibration(tmp_path: Path) -> None:
    # FP8 input stays on; AWQ leaves the expert unsmoothed (after calibration it is refused)
    model = _quantized(
        "W4A8_AWQ_BETA_CFG",
        [{"quantizer_name": "*experts.2.gate_up_proj.weight_quantizer", "enable": False}],
    )
    report, _ = _export_and_reload(model, tmp_path / "c")
    assert f"{P}.2.gate_proj" in report.excluded
    side = _json(tmp_path / "c", "modeloptim_quantizers.json")["float_layer_activations"]
    assert list(side[f"{P}.2.gate_up_proj.input_quantizer"]) == ["amax"]


def test_awq_smoothing_of_a_float_expert_is_folded_into_its_weight(tmp_path: Path) -> None:
    model = _quantized("INT4_AWQ_CFG", after=("*experts.3.gate_up_proj.weight_quantizer",))
    layer = model.get_submodule(f"{P}.3.gate_up_proj")
    s = layer.input_quantizer.pre_quant_scale
    assert s is not None
    assert not torch.equal(s, torch.ones_like(s))
    unfolded = layer.weight.detach().clone()
    before = _logits(model)
    report, _ = _export_and_reload(model, tmp_path / "c")
    assert report.folded == [f"{P}.3.gate_up_proj"]
    t = safetensors_in(tmp_path / "c")
    # engines read a plain float layer: the original weight W' * s, no pre_quant_scale
    expect = unfolded * s.reshape(1, -1)
    torch.testing.assert_close(t[f"{P}.3.gate_proj.weight"], expect[:32], rtol=1e-6, atol=0)
    torch.testing.assert_close(t[f"{P}.3.up_proj.weight"], expect[32:], rtol=1e-6, atol=0)
    assert f"{P}.3.gate_proj.pre_quant_scale" not in t
    assert layer.input_quantizer.pre_quant_scale is None
    # the fold changed the model by float rounding only (weight-only INT4: no activation step)
    err = (_logits(model) - before).abs().max() / before.abs().max()
    assert err.item() < 1e-5


def test_dense_layer_weight_off_input_on_reloads_exactly(tmp_path: Path) -> None:
    model = _quantized("FP8_DEFAULT_CFG", after=("*shared_expert.down_proj.weight_quantizer",))
    report, loaded = _export_and_reload(model, tmp_path / "c")
    name = "model.layers.0.mlp.shared_expert.down_proj"
    assert name in report.excluded
    assert torch.equal(
        loaded.get_submodule(f"{name}.input_quantizer").amax,
        model.get_submodule(f"{name}.input_quantizer").amax,
    )


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)
    }


def _assert_unchanged(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert set(now) == set(state)
    assert all(torch.equal(now[k], v) for k, v in state.items())


def test_expert_input_off_next_to_static_inputs_is_refused(tmp_path: Path) -> None:
    model = _quantized("FP8_DEFAULT_CFG", after=("*experts.3.down_proj.input_quantizer",))
    state = _state(model)
    with pytest.raises(
        UnsupportedFormatError,
        match=r"experts \[3\].*'model\.layers\.0\.mlp\.experts\.3\.down_proj\."
        r"input_quantizer'.*one input scale per projection",
    ):
        export_hf_checkpoint(model, tmp_path / "c")
    assert not (tmp_path / "c").exists()
    assert list(tmp_path.iterdir()) == []
    _assert_unchanged(model, state)


def test_quantized_smoothed_input_of_a_float_expert_is_refused(tmp_path: Path) -> None:
    model = _quantized("INT8_SMOOTHQUANT_CFG", after=("*experts.3.down_proj.weight_quantizer",))
    state = _state(model)
    with pytest.raises(
        UnsupportedFormatError,
        match=r"'model\.layers\.0\.mlp\.experts\.3\.down_proj\.input_quantizer'"
        r".*smoothing",
    ):
        export_hf_checkpoint(model, tmp_path / "c")
    assert list(tmp_path.iterdir()) == []
    _assert_unchanged(model, state)


def test_smoothquant_expert_disabled_before_calibration_exports(tmp_path: Path) -> None:
    # calibration leaves it unsmoothed, and the fused gate/up group does not re-smooth it
    model = _quantized(
        "INT8_SMOOTHQUANT_CFG",
        [{"quantizer_name": "*experts.3.gate_up_proj.weight_quantizer", "enable": False}],
    )
    _export_and_reload(model, tmp_path / "c")
    assert model.get_submodule(f"{P}.3.gate_up_proj.input_quantizer").pre_quant_scale is None


def test_float_expert_with_output_quantizer_reloads_exactly(tmp_path: Path) -> None:
    model = _quantized(
        "FP8_DEFAULT_CFG",
        [
            {
                "quantizer_name": "*experts.3.down_proj.output_quantizer",
                "cfg": {"num_bits": (4, 3), "axis": None},
            },
            {"quantizer_name": "*experts.3.down_proj.weight_quantizer", "enable": False},
        ],
    )
    _export_and_reload(model, tmp_path / "c")
    side = _json(tmp_path / "c", "modeloptim_quantizers.json")["float_layer_activations"]
    assert set(side) == {f"{P}.3.down_proj.input_quantizer", f"{P}.3.down_proj.output_quantizer"}


def test_awq_fold_on_transposed_gpt_oss_expert(tmp_path: Path) -> None:
    model = _quantized(
        "INT4_AWQ_CFG", after=("*experts.2.down_proj.weight_quantizer",), family="gpt_oss"
    )
    layer = model.get_submodule(f"{P}.2.down_proj")
    s = layer.input_quantizer.pre_quant_scale
    assert s is not None
    raw = model.get_submodule(P).down_proj[2].detach().T.clone()  # stored [in, out]
    _export_and_reload(model, tmp_path / "c")
    torch.testing.assert_close(
        safetensors_in(tmp_path / "c")[f"{P}.2.down_proj.weight"],
        raw * s.reshape(1, -1),
        rtol=1e-6,
        atol=0,
    )


def test_checkpoint_without_float_layer_scales_is_a_clear_load_error(tmp_path: Path) -> None:
    model = _quantized("FP8_DEFAULT_CFG", after=("*experts.3.down_proj.weight_quantizer",))
    export_hf_checkpoint(model, tmp_path / "c")
    desc_file = tmp_path / "c" / "modeloptim_quantizers.json"
    desc = json.loads(desc_file.read_text())
    del desc["float_layer_activations"]  # as written before the sidecar state existed
    desc_file.write_text(json.dumps(desc))
    with pytest.raises(ValueError, match=r"experts\.3\.down_proj\.input_quantizer.*export"):
        load_hf_checkpoint(tmp_path / "c")
