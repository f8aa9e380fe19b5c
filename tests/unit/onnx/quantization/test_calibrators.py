"""Activation calibrators against independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

from modeloptim.onnx.quantization.calibrators import CALIBRATORS


def _feed(calib, chunks):
    for p in range(calib.passes):
        for c in chunks:
            calib.observe("t", c, p)
    return calib.amax()["t"]


def test_max_is_global_abs_max():
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    chunks[1][5] = -9.5
    assert _feed(CALIBRATORS.create("max"), chunks) == pytest.approx(9.5)


def test_percentile_matches_numpy_within_one_bin():
    rng = np.random.default_rng(1)
    chunks = [rng.standard_normal(20000).astype(np.float32) for _ in range(2)]
    got = _feed(CALIBRATORS.create("percentile", percentile=99.0), chunks)
    ref = np.percentile(np.abs(np.concatenate(chunks)), 99.0)
    bin_width = np.abs(np.concatenate(chunks)).max() / 2048
    assert abs(got - ref) <= bin_width


def test_entropy_clips_rare_outliers_but_not_the_bulk():
    rng = np.random.default_rng(2)
    bulk = rng.uniform(-1, 1, 200000).astype(np.float32)
    outliers = np.array([40.0, -35.0], np.float32)
    got = _feed(CALIBRATORS.create("entropy"), [bulk, outliers])
    assert 0.9 < got < 5.0  # far below the 40 outlier, covers the uniform bulk


def test_unknown_method_named():
    with pytest.raises(ValueError, match="calibration_method: unknown 'mse'"):
        CALIBRATORS.create("mse")
