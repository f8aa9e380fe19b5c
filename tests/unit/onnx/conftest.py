"""Helpers for the ONNX tests: tiny graphs built in code, onnxruntime runners."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402


def make_model(nodes, inputs, outputs, inits=(), opset=13, ir=8):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def run(model_or_path, feeds, optimize=True):
    """Run with onnxruntime CPU. ``optimize=False`` keeps the graph as written: with
    optimizations on, onnxruntime fuses DQ(int4)+MatMul into MatMulNBits, which by default
    also quantizes the activation to int8 (accuracy level 4), so exact checks turn them off."""
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def fvi(name, shape):
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


@pytest.fixture
def conv_matmul_model(tmp_path):
    """x(N,3,8,8) -Conv(W as Constant node)-> Relu -> Flatten -> MatMul(M) -> y(N,10)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    m = rng.standard_normal((4 * 6 * 6, 10)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w), name="w_const"),
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "M"], ["y"], name="mm"),
    ]
    model = make_model(
        nodes, [fvi("x", ["N", 3, 8, 8])], [fvi("y", ["N", 10])], [numpy_helper.from_array(m, "M")]
    )
    path = tmp_path / "cm.onnx"
    onnx.save(model, path)
    return str(path), w, m


def fragile_pair(tmp_path, z_scale=1.0, outlier=2000.0):
    """``y = x @ W1 + z @ W2`` (nodes "plain", "fragile") and calibration data for it.

    One outlier in ``z`` sets its per-tensor scale, so every other value of ``z`` rounds to 0
    when quantized: "fragile" is the node whose quantization hurts. Returns (path, data).
    """
    rng = np.random.default_rng(5)
    w1, w2 = (rng.standard_normal((16, 8)).astype(np.float32) for _ in range(2))
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a"], name="plain"),
        helper.make_node("MatMul", ["z", "W2"], ["b"], name="fragile"),
        helper.make_node("Add", ["a", "b"], ["y"], name="sum"),
    ]
    model = make_model(
        nodes,
        [fvi("x", ["N", 16]), fvi("z", ["N", 16])],
        [fvi("y", ["N", 8])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    path = tmp_path / "two.onnx"
    onnx.save(model, path)
    x = rng.standard_normal((32, 16)).astype(np.float32)
    z = rng.standard_normal((32, 16)).astype(np.float32) * np.float32(z_scale)
    z[:, 0] = 0.0
    z[0, 0] = outlier
    return path, {"x": x, "z": z}
