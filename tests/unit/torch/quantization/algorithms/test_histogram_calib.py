"""Histogram algorithms: activation amax from percentile / entropy / mse, weights by max."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq


def _cfg(method: str, **opts):
    cfg = mtq.get_preset("INT8_DEFAULT_CFG")
    cfg["algorithm"] = {"method": method, **opts}
    return cfg


def test_percentile_amax_matches_numpy_percentile_of_abs_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 4))
    batches = [torch.randn(256, 16) for _ in range(4)]
    mtq.quantize(
        model, _cfg("percentile", percentile=99.0, num_bins=4096), lambda m: [m(b) for b in batches]
    )
    data = torch.cat(batches).abs().flatten().double().numpy()
    expected = np.percentile(data, 99.0)
    amax = model[0].input_quantizer.amax.item()
    bin_width = data.max() / 4096
    assert abs(amax - expected) <= 2 * bin_width + 1e-6, (amax, expected)
    assert amax < data.max() * 0.95  # clipped, unlike max calibration
    # weights still max-calibrated per channel; calibrator setting restored
    w = model[0].weight.detach()
    torch.testing.assert_close(model[0].weight_quantizer.amax, w.abs().amax(1, keepdim=True))
    assert model[0].input_quantizer.quant_attribute_cfg.calibrator == "max"


@pytest.mark.parametrize("method", ["entropy", "mse"])
def test_entropy_and_mse_match_a_direct_histogram_calibrator(method):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 4))
    batches = [torch.randn(2048, 8), torch.randn(2048, 8) * 1.5]
    batches[0][0, 0] = 25.0  # an outlier far outside the bulk
    mtq.quantize(model, _cfg(method, num_bins=1024), lambda m: [m(b) for b in batches])
    direct = mtq.HistogramCalibrator(8, None, False, num_bins=1024)
    for b in batches:
        direct.collect(b)
    expected = direct.compute_amax(method, start_bin=128, stride=1)
    torch.testing.assert_close(model[0].input_quantizer.amax, expected.float().reshape(()))
    assert model[0].input_quantizer.amax < 25.0


def test_histogram_algorithms_need_data_and_validate_options():
    with pytest.raises(ValueError, match="forward_loop"):
        mtq.quantize(nn.Sequential(nn.Linear(2, 2)), _cfg("entropy"))
    with pytest.raises(ValueError, match="percentile"):
        mtq.QuantizeConfig.parse(_cfg("percentile", percentile=120))
