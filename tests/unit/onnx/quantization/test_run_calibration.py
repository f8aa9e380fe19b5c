"""run_calibration: the second histogram pass from kept tensors equals a second model run."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest

from modeloptim.onnx.quantization.quantize import run_calibration

qmod = importlib.import_module("modeloptim.onnx.quantization.quantize")


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_kept_tensors_give_the_same_ranges_with_one_model_pass(
    conv_matmul_model, monkeypatch, method
):
    path, _, _ = conv_matmul_model
    model = onnx.load(path)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((4, 3, 8, 8)).astype(np.float32)} for _ in range(6)]
    names = ["x", "r", "f"]
    runs = []
    real = qmod.run_capture
    monkeypatch.setattr(
        qmod, "run_capture", lambda *a, **k: runs.append(k.get("progress")) or real(*a, **k)
    )
    rerun = run_calibration(model, names, feeds, method, cache_bytes=0)
    assert len(runs) == 2  # no budget: the model runs once per pass
    runs.clear()
    kept = run_calibration(model, names, feeds, method)
    assert len(runs) == 1
    assert kept.amax().keys() == set(names)
    assert kept.amax() == rerun.amax()  # exactly: the same tensors
    assert kept.ranges() == rerun.ranges()
    for name in names:
        np.testing.assert_array_equal(kept.hists[name], rerun.hists[name])
    # An independent check of one histogram: numpy over all feeds' |x| at once.
    x = np.concatenate([f["x"] for f in feeds])
    want, _ = np.histogram(np.abs(x), 2048, (0, np.abs(x).max()))
    np.testing.assert_array_equal(kept.hists["x"], want)


def test_budget_overflow_falls_back_to_a_second_run(conv_matmul_model, monkeypatch):
    path, _, _ = conv_matmul_model
    model = onnx.load(path)
    feeds = [{"x": np.full((2, 3, 8, 8), float(k + 1), np.float32)} for k in range(4)]
    runs = []
    real = qmod.run_capture
    monkeypatch.setattr(qmod, "run_capture", lambda *a, **k: runs.append(1) or real(*a, **k))
    nbytes = 2 * 3 * 8 * 8 * 4
    calib = run_calibration(model, ["x"], feeds, "entropy", cache_bytes=3 * nbytes)
    assert len(runs) == 2  # four feeds of x do not fit in three feeds' bytes
    assert calib.hists["x"].sum() == 4 * 2 * 3 * 8 * 8
