"""Applying quant_cfg rules: wildcards, later-wins, "default" first, parent_class, both forms."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.conversion import (
    named_quantizers,
    named_tensor_quantizers,
    replace_quant_module,
    set_quantizer_attribute,
    set_quantizer_by_cfg,
)
from modeloptim.torch.quantization.nn import QuantLinear, SequentialQuantizer, TensorQuantizer


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up_proj = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.down_proj = nn.Linear(16, 8)
        self.lm_head = nn.Linear(8, 4)

    def forward(self, x):
        return self.lm_head(self.down_proj(torch.relu(self.bn(self.up_proj(x)))))


def _converted() -> _Block:
    model = _Block()
    replace_quant_module(model)
    return model


def _apply(model, quant_cfg):
    return set_quantizer_by_cfg(model, mtq.QuantizeConfig.parse({"quant_cfg": quant_cfg}).quant_cfg)


def _enabled(model) -> set[str]:
    return {n for n, q in named_tensor_quantizers(model) if q.is_enabled}


def test_replace_quant_module_converts_registered_layers_and_names_quantizers():
    model = _Block()
    names = replace_quant_module(model)
    assert names == ["up_proj", "bn", "down_proj", "lm_head"]
    assert isinstance(model.up_proj, QuantLinear)
    assert model.up_proj.weight_quantizer.name == "up_proj.weight_quantizer"
    assert not model.up_proj.output_quantizer.is_enabled  # output off by default
    all_names = [n for n, _, _ in named_quantizers(model)]
    assert "bn.input_quantizer" in all_names
    assert "bn.weight_quantizer" not in all_names


def test_wildcards_later_entries_win_and_default_applies_first():
    model = _converted()
    _apply(
        model,
        [
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4, "axis": 0}},
            {"quantizer_name": "*lm_head*", "enable": False},
            {"quantizer_name": "*down_proj.weight_quantizer", "cfg": {"num_bits": 8}},
            {"quantizer_name": "default", "enable": False},  # placed last, applied first
        ],
    )
    assert _enabled(model) == {"up_proj.weight_quantizer", "down_proj.weight_quantizer"}
    assert model.up_proj.weight_quantizer.num_bits == 4
    assert model.up_proj.weight_quantizer.axis == 0
    # the later entry replaced every attribute (axis back to its default None)
    assert model.down_proj.weight_quantizer.num_bits == 8
    assert model.down_proj.weight_quantizer.axis is None


def test_parent_class_restricts_entry():
    model = _converted()
    _apply(
        model,
        [
            {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
            {"quantizer_name": "*", "parent_class": "nn.BatchNorm1d", "enable": False},
        ],
    )
    enabled = _enabled(model)
    assert "bn.input_quantizer" not in enabled
    assert "up_proj.input_quantizer" in enabled


def test_dict_form_equals_list_form_including_class_scope():
    dict_form = {
        "*weight_quantizer": {"num_bits": 8, "axis": 0},
        "*input_quantizer": {"num_bits": (4, 3)},
        "nn.BatchNorm1d": {"*": {"enable": False}},
        "*lm_head*": {"enable": False},
        "default": {"enable": False},
    }
    list_form = mtq.QuantizeConfig.parse({"quant_cfg": dict_form}).quant_cfg
    assert list_form[2].parent_class == "nn.BatchNorm1d"
    assert list_form[2].cfg is None
    assert list_form[2].enable is False
    a, b = _converted(), _converted()
    _apply(a, dict_form)
    _apply(b, [e.model_dump(exclude_none=True) for e in list_form])
    assert (
        _enabled(a)
        == _enabled(b)
        == {
            "up_proj.weight_quantizer",
            "up_proj.input_quantizer",
            "down_proj.weight_quantizer",
            "down_proj.input_quantizer",
        }
    )
    assert a.up_proj.input_quantizer.format.name == "fp8_e4m3"


def test_list_cfg_makes_sequential_quantizer_and_back():
    model = _converted()
    _apply(
        model,
        [
            {
                "quantizer_name": "*up_proj.weight_quantizer",
                "cfg": [{"num_bits": 4, "block_sizes": {-1: 4}}, {"num_bits": (4, 3)}],
            }
        ],
    )
    wq = model.up_proj.weight_quantizer
    assert isinstance(wq, SequentialQuantizer)
    assert [q.name for q in wq] == ["up_proj.weight_quantizer.0", "up_proj.weight_quantizer.1"]
    names = [n for n, _ in named_tensor_quantizers(model)]
    assert "up_proj.weight_quantizer.1" in names
    _apply(model, [{"quantizer_name": "*up_proj.weight_quantizer", "cfg": {"num_bits": 8}}])
    assert isinstance(model.up_proj.weight_quantizer, TensorQuantizer)
    model.up_proj.export()
    assert "weight_quantizer" not in model.up_proj._modules


def test_unmatched_enabling_pattern_warns_but_exclusions_do_not():
    model = _converted()
    with pytest.warns(UserWarning, match=r"'\*q_proj\*' matches no quantizer"):
        _apply(model, [{"quantizer_name": "*q_proj*", "cfg": {"num_bits": 8}}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _apply(model, [{"quantizer_name": "*router*", "enable": False}])


def test_set_quantizer_attribute_and_callable_pattern():
    model = _converted()
    n = set_quantizer_attribute(
        model,
        lambda name: name.endswith("lm_head.input_quantizer"),
        {"num_bits": 6, "unsigned": True},
    )
    assert n == 1
    q = model.lm_head.input_quantizer
    assert q.num_bits == 6
    assert q.unsigned
    assert q.is_enabled
    with pytest.raises(TypeError, match="wildcard"):
        mtq.enable_quantizer(model, 3)  # type: ignore[arg-type]


def test_changing_layout_drops_stale_amax_but_toggles_keep_it():
    model = _converted()
    _apply(model, [{"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}}])
    q = model.up_proj.weight_quantizer
    q.amax = torch.ones(16, 1)
    mtq.disable_quantizer(model, "up_proj.weight_quantizer")
    mtq.enable_quantizer(model, "up_proj.weight_quantizer")
    assert q.amax is not None
    _apply(model, [{"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}}])
    assert q.amax is not None  # same layout: calibrated amax stays valid
    _apply(model, [{"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8}}])
    assert q.amax is None  # per-channel amax would be wrong for per-tensor
