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


def _per_node_correct_biases(model, plan, fmt, act, qparams, feeds):
    """The first implementation: one session per node, two runs per node and feed."""
    from modeloptim.onnx.ort_utils import make_session, run_capture
    from modeloptim.onnx.quantization import bias_correction as bc
    from modeloptim.onnx.quantization.qdq import quantize_weight
    from modeloptim.onnx.quantization.sensitivity import single_node_model

    targets = bc._targets(model, plan)
    inits = {i.name: i for i in model.graph.initializer}
    axes = {(n.name, idx): axis for n, idx, axis in plan.weights}
    sums = {t.node.name: np.zeros(t.channels) for t in targets}
    counts = dict.fromkeys(sums, 0)
    fq, sessions = {}, {}
    for t in targets:
        w = numpy_helper.to_array(inits[t.node.input[1]]).astype(np.float32)
        axis = axes[(t.node.name, 1)]
        q, scale = quantize_weight(w, fmt, axis)
        shape = [1] * w.ndim
        if axis is not None:
            shape[axis % w.ndim] = -1
        fq[t.node.name] = q.astype(np.float32) * scale.reshape(shape)
        sessions[t.node.name] = make_session(
            single_node_model(bc._bias_free(t.node), t.node.input[:2], model.opset_import),
            optimize=False,
        )

    def accumulate(values):
        for t in targets:
            x = values[t.node.input[0]]
            w = numpy_helper.to_array(inits[t.node.input[1]])
            xq = act.fake_quantize(x, *qparams[t.node.input[0]])
            sess = sessions[t.node.name]
            names = [i.name for i in sess.get_inputs()]
            ref = sess.run(None, dict(zip(names, (x, w), strict=True)))[0]
            got = sess.run(None, dict(zip(names, (xq, fq[t.node.name]), strict=True)))[0]
            err = np.moveaxis(np.asarray(got, np.float64) - ref, t.channel_axis, -1)
            sums[t.node.name] += err.reshape(-1, t.channels).sum(0)
            counts[t.node.name] += err.size // t.channels

    needed = sorted({t.node.input[0] for t in targets})
    run_capture(model, needed, feeds, accumulate)
    for t in targets:
        delta = sums[t.node.name] / counts[t.node.name]
        if t.bias is None:  # the tests' models have every bias
            raise AssertionError(t.node.name)
        bias = numpy_helper.to_array(inits[t.bias]).astype(np.float32)
        inits[t.bias].CopyFrom(numpy_helper.from_array((bias - delta).astype(np.float32), t.bias))
    return {t.node.name: 0.0 for t in targets}


def _many_targets_model(tmp_path):
    """Conv+bias -> Relu -> two Convs reading the same tensor -> Add -> Flatten -> MatMul+Add
    -> Gemm: five bias-correction targets, one input shared by two of them."""
    rng = np.random.default_rng(11)

    def arr(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale + 0.02).astype(np.float32)

    inits = {
        "W1": arr(8, 3, 3, 3),
        "B1": arr(8),
        "W2": arr(8, 8, 3, 3, scale=0.1),
        "B2": arr(8),
        "W3": arr(8, 8, 3, 3, scale=0.1),
        "B3": arr(8),
        "M": arr(8 * 6 * 6, 10, scale=0.05),
        "MB": arr(10),
        "G": arr(10, 4),
        "GB": arr(4),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2"),
        helper.make_node("Conv", ["r1", "W3", "B3"], ["c3"], name="conv3"),
        helper.make_node("Add", ["c2", "c3"], ["s"], name="sum"),
        helper.make_node("Flatten", ["s"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "M"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "MB"], ["a"], name="mm_bias"),
        helper.make_node("Gemm", ["a", "G", "GB"], ["y"], name="gemm"),
    ]
    model = make_model(
        nodes,
        [fvi("x", ["N", 3, 10, 10])],
        [fvi("y", ["N", 4])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    path = tmp_path / "many.onnx"
    onnx.save(model, path)
    return str(path)


@pytest.mark.parametrize("per_session", [1, 2, 16])
@pytest.mark.parametrize("activation_type", ["uint8", "int8"])
def test_grouped_sessions_give_the_per_node_result_bit_for_bit(
    tmp_path, monkeypatch, per_session, activation_type
):
    import importlib

    from modeloptim.onnx.quantization import bias_correction

    qmod = importlib.import_module("modeloptim.onnx.quantization.quantize")
    src = _many_targets_model(tmp_path)
    rng = np.random.default_rng(12)
    data = [(rng.standard_normal((3, 3, 10, 10)) + 0.2).astype(np.float32) for _ in range(5)]
    monkeypatch.setattr(bias_correction, "_NODES_PER_SESSION", per_session)
    outs = {}
    for impl in ("grouped", "per_node"):
        if impl == "per_node":
            monkeypatch.setattr(qmod, "correct_biases", _per_node_correct_biases)
        outs[impl] = tmp_path / f"{impl}.onnx"
        res = quantize(
            src,
            "int8",
            calibration_data=data,
            output_path=outs[impl],
            bias_correction=True,
            activation_type=activation_type,
        )
        assert "bias correction on 5 nodes" in res.notes
    got, ref = (
        {i.name: numpy_helper.to_array(i) for i in onnx.load(outs[k]).graph.initializer}
        for k in ("grouped", "per_node")
    )
    assert got.keys() == ref.keys()
    for name in ("B1", "B2", "B3", "MB", "GB"):
        assert not np.array_equal(ref[name], numpy_helper.to_array(_init(src, name))), name
    for name, value in ref.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def _init(path, name):
    return next(i for i in onnx.load(path).graph.initializer if i.name == name)
