"""Bias correction: the corrected QDQ graph has zero mean output error on calibration data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from modeloptim.onnx.quantization import quantize
from tests.unit.onnx.conftest import fvi, make_model, run


def _conv_model(tmp_path, with_bias):
    rng = np.random.default_rng(3)
    # Skewed weights: a few large entries set each channel's scale, the small ones round
    # coarsely, so the mean output error is clearly non-zero.
    w = (rng.standard_normal((6, 3, 3, 3)) * 0.05 + 0.013).astype(np.float32)
    w[:, 0, 0, 0] = 1.0
    inits = [numpy_helper.from_array(w, "W")]
    ins = ["x", "W"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "B"))
        ins.append("B")
    model = make_model(
        [helper.make_node("Conv", ins, ["y"], name="conv")],
        [fvi("x", ["N", 3, 10, 10])],
        [fvi("y", ["N", 6, 8, 8])],
        inits,
    )
    path = tmp_path / "conv.onnx"
    onnx.save(model, path)
    return str(path)


def _matmul_add_model(tmp_path):
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((16, 8)) * 0.05 + 0.02).astype(np.float32)
    w[0] = 1.0
    b = rng.standard_normal(8).astype(np.float32)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
            helper.make_node("Add", ["m", "B"], ["y"], name="add"),
        ],
        [fvi("x", ["N", 5, 16])],
        [fvi("y", ["N", 5, 8])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    path = tmp_path / "mm.onnx"
    onnx.save(model, path)
    return str(path)


def _mean_error(src, out, x, axis):
    ref = np.asarray(run(src, {"x": x})[0], np.float64)
    got = np.asarray(run(out, {"x": x}, optimize=False)[0], np.float64)
    err = np.moveaxis(got - ref, axis, -1)
    return err.reshape(-1, err.shape[-1]).mean(0), np.sqrt(np.mean(ref**2))


@pytest.mark.parametrize(
    ("builder", "shape", "axis"),
    [
        (lambda p: _conv_model(p, True), (16, 3, 10, 10), 1),
        (lambda p: _conv_model(p, False), (16, 3, 10, 10), 1),
        (_matmul_add_model, (512, 5, 16), -1),
    ],
)
def test_bias_correction_zeroes_mean_error(tmp_path, builder, shape, axis):
    src = builder(tmp_path)
    x = (np.random.default_rng(5).standard_normal(shape) + 0.3).astype(np.float32)
    errs = {}
    for flag in (False, True):
        out = str(tmp_path / f"q{flag}.onnx")
        quantize(
            src,
            "int8",
            calibration_data=x,
            calibration_batch_size=64,
            output_path=out,
            qdq_placement="inputs",
            bias_correction=flag,
        )
        onnx.checker.check_model(onnx.load(out), full_check=True)
        errs[flag], rms = _mean_error(src, out, x, axis)
    # Without correction the per-channel mean error is visible; with it the mean over the
    # calibration data is zero up to float32 rounding (the op is linear in its bias).
    assert np.abs(errs[False]).max() > 1e-3 * rms
    assert np.abs(errs[True]).max() < 1e-5 * rms + 1e-6
    # The correction is the measured mean error, not a blanket change: an unseen batch's
    # mean error also shrinks.
    x2 = (np.random.default_rng(6).standard_normal(shape) + 0.3).astype(np.float32)
    before = np.abs(_mean_error(src, str(tmp_path / "qFalse.onnx"), x2, axis)[0]).mean()
    after = np.abs(_mean_error(src, str(tmp_path / "qTrue.onnx"), x2, axis)[0]).mean()
    assert after < 0.5 * before


def test_shared_bias_is_left_alone(tmp_path):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    model = make_model(
        [
            helper.make_node("Conv", ["x", "W", "B"], ["a"], name="c1"),
            helper.make_node("Conv", ["x", "W2", "B"], ["b"], name="c2"),
            helper.make_node("Add", ["a", "b"], ["y"], name="add"),
        ],
        [fvi("x", [2, 3, 4, 4])],
        [fvi("y", [2, 4, 4, 4])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(w * 0.5, "W2"),
            numpy_helper.from_array(b, "B"),
        ],
    )
    src = tmp_path / "shared.onnx"
    onnx.save(model, src)
    out = tmp_path / "q.onnx"
    x = rng.standard_normal((4, 2, 3, 4, 4)).astype(np.float32)
    quantize(str(src), "int8", calibration_data=list(x), output_path=out, bias_correction=True)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer}
    np.testing.assert_array_equal(inits["B"], b)
