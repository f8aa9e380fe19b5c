"""Sanitizer: Constant weights, folded weight paths, BatchNorm folding, opset upgrade."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from modeloptim.onnx.calib_data import make_feeds
from modeloptim.onnx.sanitize import sanitize
from tests.unit.onnx.conftest import fvi, make_model, run


def test_constant_transpose_and_batchnorm_folded_same_outputs():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gamma, beta = (
        rng.uniform(0.5, 2, 4).astype(np.float32),
        rng.standard_normal(4).astype(np.float32),
    )
    mean, var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    mt = rng.standard_normal((10, 4)).astype(np.float32)
    c = lambda n, a: helper.make_node("Constant", [], [n], value=numpy_helper.from_array(a))  # noqa: E731
    nodes = [
        c("W", w),
        c("g", gamma),
        c("b", beta),
        c("m", mean),
        c("v", var),
        c("MT", mt),
        helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["y", "g", "b", "m", "v"], ["z"], epsilon=1e-3),
        helper.make_node("Transpose", ["MT"], ["M"], perm=[1, 0]),
        helper.make_node("Transpose", ["z"], ["zt"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["zt", "M"], ["out"]),
    ]
    model = make_model(nodes, [fvi("x", [1, 3, 5, 5])], [fvi("out", [1, 5, 5, 10])], opset=12)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    ref = run(model, {"x": x})[0]
    clean, report = sanitize(model, min_opset=13)
    ops = [n.op_type for n in clean.graph.node]
    assert "Constant" not in ops
    assert "BatchNormalization" not in ops
    assert ops.count("Transpose") == 1  # only the activation transpose remains
    assert report.folded_batchnorms == 1
    assert report.opset_to == 13
    np.testing.assert_allclose(run(clean, {"x": x})[0], ref, rtol=1e-4, atol=1e-4)


def test_make_feeds_forms_and_batching(tmp_path):
    model = make_model(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        [fvi("a", ["N", 2]), fvi("b", ["N", 2])],
        [fvi("y", ["N", 2])],
    )
    a, b = np.ones((5, 2), np.float32), np.zeros((5, 2), np.float64)
    feeds = make_feeds({"a": a, "b": b}, model, batch_size=2)
    assert [f["a"].shape[0] for f in feeds] == [2, 2, 1]
    assert feeds[0]["b"].dtype == np.float32
    np.savez(tmp_path / "d.npz", a=a, b=b)
    assert len(make_feeds(str(tmp_path / "d.npz"), model, batch_size=5)) == 1
    listed = make_feeds([{"a": a[:1], "b": b[:1]}, {"a": a[:3], "b": b[:3]}], model)
    assert [f["a"].shape[0] for f in listed] == [1, 3]


def test_subgraph_left_intact_and_runs(tmp_path):
    from modeloptim.onnx.quantization import quantize

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["t"])], "then", [], [fvi("t", [2, 4])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [fvi("e", [2, 4])]
    )
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["y0"], name="outer_mm"),
        helper.make_node("ReduceSum", ["y0"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="if"),
    ]
    model = make_model(
        nodes,
        [fvi("x", [2, 4])],
        [fvi("y", [2, 4])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.float32(0), "zero")],
    )
    path, out = str(tmp_path / "if.onnx"), str(tmp_path / "ifq.onnx")
    onnx.save(model, path)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    res = quantize(path, "int8", calibration_data=x, calibration_method="max", output_path=out)
    assert res.quantized_nodes == ["outer_mm"]
    q = onnx.load(out)
    if_node = next(n for n in q.graph.node if n.op_type == "If")
    then_b = next(a.g for a in if_node.attribute if a.name == "then_branch")
    assert then_b.node[0].input[1] == "W"  # subgraph still reads the float W
    assert any(i.name == "W" for i in q.graph.initializer)
    for sign in (1, -1):
        np.testing.assert_allclose(
            run(out, {"x": sign * x})[0], run(path, {"x": sign * x})[0], rtol=0.05, atol=0.05
        )


def test_make_feeds_static_batch_must_divide(tmp_path):
    import pytest

    model = make_model(
        [helper.make_node("Relu", ["a"], ["y"])], [fvi("a", [4, 2])], [fvi("y", [4, 2])]
    )
    assert len(make_feeds(np.ones((8, 2), np.float32), model, batch_size=3)) == 2
    with pytest.raises(ValueError, match="fixed batch size 4"):
        make_feeds(np.ones((6, 2), np.float32), model)
