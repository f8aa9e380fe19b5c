"""Presets: every ModelOpt name exists, parses, and has ModelOpt's numerics."""

from __future__ import annotations

import pytest

import modeloptim.torch.quantization as mtq

DESIGN_NAMES = [
    "INT8_DEFAULT_CFG", "INT8_SMOOTHQUANT_CFG", "INT8_WEIGHT_ONLY_CFG", "FP8_DEFAULT_CFG",
    "FP8_PER_CHANNEL_PER_TOKEN_CFG", "INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "INT4_AWQ_CFG",
    "W4A8_AWQ_BETA_CFG", "NVFP4_DEFAULT_CFG", "NVFP4_AWQ_LITE_CFG", "NVFP4_AWQ_CLIP_CFG",
    "NVFP4_AWQ_FULL_CFG", "W4A16_NVFP4_CFG", "MXFP8_DEFAULT_CFG", "MXFP6_DEFAULT_CFG",
    "MXFP4_DEFAULT_CFG", "FP8_KV_CFG", "NVFP4_KV_CFG",
]  # fmt: skip


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_design_presets_exist_as_module_attributes(name):
    assert getattr(mtq, name) is mtq.PRESETS[name]
    assert isinstance(mtq.PRESETS[name]["quant_cfg"], list)


@pytest.mark.parametrize("name", sorted(mtq.PRESETS))
def test_presets_parse(name):
    cfg = mtq.QuantizeConfig.parse(mtq.PRESETS[name])
    assert cfg.algorithm.method in mtq.calibration_algorithms.known


def test_per_token_preset_is_dynamic_per_row():
    # ModelOpt writes per-token dynamic FP8 as block_sizes {-1: None} (one block = whole row).
    cfg = mtq.QuantizeConfig.parse(mtq.FP8_PER_CHANNEL_PER_TOKEN_CFG).quant_cfg
    act = next(e for e in cfg if e.quantizer_name == "*input_quantizer").cfg
    assert act.block_sizes == {-1: None, "type": "dynamic"}
    w = next(e for e in cfg if e.quantizer_name == "*weight_quantizer").cfg
    assert (w.num_bits, w.axis) == ((4, 3), 0)


def _cfg(name: str, pattern: str):
    entries = [
        e
        for e in mtq.QuantizeConfig.parse(mtq.PRESETS[name]).quant_cfg
        if e.quantizer_name == pattern
    ]
    return entries[-1]


def test_numerics_match_modelopt():
    w = _cfg("INT8_DEFAULT_CFG", "*weight_quantizer").cfg
    assert (w.num_bits, w.axis) == (8, 0)
    a = _cfg("INT8_DEFAULT_CFG", "*input_quantizer").cfg
    assert (a.num_bits, a.axis) == (8, None)
    assert _cfg("INT8_WEIGHT_ONLY_CFG", "*input_quantizer").enable is False
    f = _cfg("FP8_DEFAULT_CFG", "*weight_quantizer").cfg
    assert (f.num_bits, f.axis, f.block_sizes) == ((4, 3), None, None)
    i4 = _cfg("INT4_AWQ_CFG", "*weight_quantizer").cfg
    assert (i4.num_bits, i4.block_sizes[-1]) == (4, 128)
    assert mtq.QuantizeConfig.parse(mtq.INT4_AWQ_CFG).algorithm.method == "awq_lite"
    nv = _cfg("NVFP4_DEFAULT_CFG", "*input_quantizer").cfg
    assert nv.num_bits == (2, 1)
    assert nv.block_sizes == {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}
    mx = _cfg("MXFP8_DEFAULT_CFG", "*weight_quantizer").cfg
    assert mx.block_sizes == {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}
    w4a8 = _cfg("W4A8_AWQ_BETA_CFG", "*weight_quantizer").cfg
    assert [c.num_bits for c in w4a8] == [4, (4, 3)]
    for name in ("INT8_DEFAULT_CFG", "NVFP4_DEFAULT_CFG", "MXFP4_DEFAULT_CFG"):
        entries = mtq.QuantizeConfig.parse(mtq.PRESETS[name]).quant_cfg
        off = {(e.quantizer_name, e.parent_class) for e in entries if e.resolved_enable is False}
        assert {
            ("*lm_head*", None),
            ("*router*", None),
            ("*", "nn.BatchNorm2d"),
            ("default", None),
        } <= off


def test_get_preset_returns_copy_and_rejects_unknown():
    p = mtq.get_preset("fp8_default")
    p["quant_cfg"].clear()
    assert mtq.FP8_DEFAULT_CFG["quant_cfg"]
    with pytest.raises(ValueError, match=r"unknown preset name .FP9.*FP8_DEFAULT_CFG"):
        mtq.get_preset("FP9")
