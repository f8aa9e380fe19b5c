"""Calibration algorithm registry: built, planned, custom registrations."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.algorithms.registry import (
    AlgorithmConfig,
    CalibrationAlgorithmRegistry,
)


def test_builtin_and_planned_names():
    reg = mtq.calibration_algorithms
    assert {"max", "none"} <= set(reg.names)
    # the algos branch built these; svdquant is still planned
    assert {"awq_lite", "awq_clip", "awq_full", "smoothquant", "gptq"} <= set(reg.names)
    assert "svdquant" in set(reg.known) - set(reg.names)
    with pytest.raises(NotImplementedError, match="'svdquant' is not implemented yet"):
        reg.get("svdquant")
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        reg.get("foo")


def test_custom_algorithm_registers_and_runs_via_quantize(monkeypatch):
    reg = CalibrationAlgorithmRegistry(planned=("scale_half",))

    class HalfConfig(AlgorithmConfig):
        method: Literal["scale_half"] = "scale_half"
        factor: float = 0.5

    calls = []

    @reg.register("scale_half", HalfConfig)
    def scale_half(model, forward_loop, config):
        mtq.calibration_algorithms.get("max").fn(model, forward_loop, None)
        mtq.postprocess_amax(model, "*", lambda a: a * config.factor)
        calls.append(config.factor)

    assert reg.is_built("scale_half")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("scale_half", HalfConfig)(scale_half)
    monkeypatch.setattr("modeloptim.torch.quantization.model_quant.calibration_algorithms", reg)
    monkeypatch.setattr("modeloptim.torch.quantization.config.quantize.calibration_algorithms", reg)
    model = nn.Sequential(nn.Linear(4, 4))
    x = torch.randn(3, 4)
    cfg = {
        "quant_cfg": {"*input_quantizer": {"num_bits": 8}, "default": {"enable": False}},
        "algorithm": {"method": "scale_half", "factor": 0.25},
    }
    mtq.quantize(model, cfg, lambda m: m(x))
    assert calls == [0.25]
    torch.testing.assert_close(model[0].input_quantizer.amax, x.abs().amax() * 0.25)
