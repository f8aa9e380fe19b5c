"""QuantizeConfig parsing: both quant_cfg forms, algorithm field, clear errors."""

from __future__ import annotations

import pytest

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.algorithms.registry import PlannedAlgorithmConfig
from modeloptim.torch.quantization.config.quantize import normalize_quant_cfg


def test_dict_form_normalizes_in_order_with_toggle_and_cfg_entries():
    entries = normalize_quant_cfg(
        {
            "*weight_quantizer": {"num_bits": 8, "axis": 0},
            "*lm_head*": {"enable": False},
            "nn.BatchNorm2d": {"*": {"enable": False}},
        }
    )
    assert entries == [
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*lm_head*", "enable": False},
        {"quantizer_name": "*", "parent_class": "nn.BatchNorm2d", "enable": False},
    ]


def test_block_sizes_dict_is_not_mistaken_for_class_scope():
    cfg = mtq.QuantizeConfig.parse(
        {
            "quant_cfg": {
                "*w*": {
                    "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)},
                    "num_bits": (4, 3),
                }
            }
        }
    )
    assert cfg.quant_cfg[0].cfg.block_sizes[-1] == 32


def test_algorithm_forms():
    assert mtq.QuantizeConfig.parse({"quant_cfg": []}).algorithm.method == "max"
    assert mtq.QuantizeConfig.parse({"quant_cfg": [], "algorithm": None}).algorithm.method == "none"
    planned = mtq.QuantizeConfig.parse(
        {"quant_cfg": [], "algorithm": {"method": "svdquant", "lowrank": 32}}
    ).algorithm
    assert isinstance(planned, PlannedAlgorithmConfig)
    assert planned.model_dump() == {"method": "svdquant", "lowrank": 32}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"quant_cfg": {"*": {"num_bitz": 8}}}, r"quant_cfg\[0 '\*'\]\.cfg: num_bitz"),
        ({"quant_cfg": [{"quantizer_name": "*", "enabled": True}]}, r"\[0 '\*'\]\.enabled"),
        ({"quant_cfg": {"*": {"num_bits": 8, "axis": 0, "block_sizes": {-1: 8}}}}, "axis and"),
        ({"quant_cfg": [], "algorithm": "maxx"}, r"unknown method 'maxx'.*'max'"),
        ({"quant_cfg": [], "algorithm": {"method": "max", "alpha": 1}}, r"'max'.*alpha"),
        ({"quant_cfg": 3}, "quant_cfg: expected a list"),
        ({"quant_cfg": [], "extra": 1}, "extra"),
        ("INT8", "expected a dict"),
    ],
)
def test_bad_configs_name_the_field(config, message):
    with pytest.raises(ValueError, match=message):
        mtq.QuantizeConfig.parse(config)  # type: ignore[arg-type]


def test_resolved_enable():
    cfg = mtq.QuantizeConfig.parse(
        {
            "quant_cfg": [
                {"quantizer_name": "a", "cfg": {"num_bits": 8}},
                {"quantizer_name": "b", "cfg": {"num_bits": 8, "enable": False}},
                {"quantizer_name": "c", "cfg": {"num_bits": 8}, "enable": False},
                {"quantizer_name": "d", "enable": True},
            ]
        }
    )
    assert [e.resolved_enable for e in cfg.quant_cfg] == [True, False, False, True]
