"""percentile / entropy / mse calibration, as algorithms and per quantizer in the config."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.calib import HistogramCalibrator


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(64, 16, generator=g) for _ in range(3)]
    data[1][0, 0] = 40.0  # one outlier: max calibration would waste the range on it
    return model, data


def _reference_amax(data, method, **kw):
    cal = HistogramCalibrator(8, None, False)
    for x in data:
        cal.collect(x)
    return cal.compute_amax(method, **kw)


@pytest.mark.parametrize(
    ("algorithm", "kw"),
    [
        ({"method": "percentile", "percentile": 99.9}, {"percentile": 99.9}),
        ({"method": "entropy"}, {}),
        ({"method": "mse"}, {}),
    ],
)
def test_algorithm_matches_calibrator_reference(algorithm, kw):
    model, data = _setup()
    mtq.quantize(
        model,
        {**copy.deepcopy(mtq.INT8_DEFAULT_CFG), "algorithm": algorithm},
        lambda m: [m(x) for x in data],
    )
    got = model[0].input_quantizer.amax
    ref = _reference_amax(data, algorithm["method"], **kw)
    torch.testing.assert_close(got, ref)
    assert float(got) < 40.0  # the outlier is clipped
    # weights stay max-calibrated (per channel)
    torch.testing.assert_close(
        model[0].weight_quantizer.amax.reshape(-1), model[0].weight.abs().amax(1)
    )
    # the original calibrator is back for later re-calibration
    assert type(model[0].input_quantizer._calibrator).__name__ == "MaxCalibrator"


def test_per_quantizer_choice_in_config():
    model, data = _setup()
    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    cfg["quant_cfg"].append(
        {
            "quantizer_name": "0.input_quantizer",
            "cfg": {"num_bits": 8, "calibrator": {"method": "histogram", "amax_method": "mse"}},
        }
    )
    mtq.quantize(model, cfg, lambda m: [m(x) for x in data])
    torch.testing.assert_close(model[0].input_quantizer.amax, _reference_amax(data, "mse"))
    # the other input quantizer keeps max calibration
    h = torch.relu(torch.cat(data) @ model[0].weight.T + model[0].bias)
    torch.testing.assert_close(model[2].input_quantizer.amax, h.abs().amax())


def test_bad_histogram_method_is_rejected():
    model, _ = _setup()
    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    cfg["quant_cfg"].append(
        {
            "quantizer_name": "*input_quantizer",
            "cfg": {"calibrator": {"method": "histogram", "amax_method": "median"}},
        }
    )
    with pytest.raises(ValueError, match="amax_method"):
        mtq.quantize(model, cfg, lambda m: None)
