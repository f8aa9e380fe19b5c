"""INT8/FP8 QDQ graphs checked against a numpy re-implementation of the QDQ math."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from modeloptim.onnx.quantization import quantize
from tests.unit.onnx.conftest import fragile_pair, fvi, make_model, run


def np_conv(x, w):
    """Valid 2-D convolution, stride 1, float64 (independent of onnxruntime)."""
    n, _c, h, wd = x.shape
    k = w.shape[2]
    out = np.zeros((n, w.shape[0], h - k + 1, wd - k + 1))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i : i + h - k + 1, j : j + wd - k + 1]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def fq_int8(x, scale, lo=-128, hi=127):
    return np.clip(np.rint(x / scale), lo, hi) * scale


def fq_fp8(x, scale):
    q = np.clip(x / scale, -448, 448).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
    return q.astype(np.float64) * scale


@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_qdq_graph_matches_numpy_fake_quant(conv_matmul_model, tmp_path, mode):
    path, w, m = conv_matmul_model
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    out = str(tmp_path / f"q_{mode}.onnx")
    # Symmetric activations (zero point 0, the TensorRT layout) are asked for explicitly:
    # the int8-mode default is uint8 (test_int8_mode_defaults_to_uint8_activations).
    res = quantize(
        path,
        mode,
        calibration_data=x,
        calibration_method="max",
        output_path=out,
        activation_type=mode,
    )
    assert set(res.quantized_nodes) == {"conv", "mm"}
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert res.opset == (13 if mode == "int8" else 19)

    fmax = 127.0 if mode == "int8" else 448.0
    fq = fq_int8 if mode == "int8" else fq_fp8
    # Independent reference: per-tensor activation scales from max |x|, per-channel weights.
    xs = np.abs(x).max() / fmax
    ws = np.abs(w).reshape(4, -1).max(axis=1) / fmax
    wq = (
        np.clip(np.rint(w / ws[:, None, None, None]), -127, 127) * ws[:, None, None, None]
        if mode == "int8"
        else fq_fp8(w.astype(np.float64), ws[:, None, None, None])
    )
    c = np_conv(fq(x.astype(np.float64), xs), wq)
    f = np.maximum(c, 0).reshape(8, -1)
    # Calibration sees the float model: the amax of f comes from the unquantized conv.
    f_float = np.maximum(np_conv(x.astype(np.float64), w), 0)
    fs = np.float32(np.abs(f_float).max()) / np.float32(fmax)
    ms = np.abs(m).max(axis=0) / fmax
    mq = (
        np.clip(np.rint(m / ms), -127, 127) * ms
        if mode == "int8"
        else fq_fp8(m.astype(np.float64), ms)
    )
    ref = fq(f, fs) @ mq
    got = run(out, {"x": x})[0]
    fp32 = run(path, {"x": x})[0]
    # Quantization changes the result noticeably, the reference reproduces it closely.
    assert np.abs(got - fp32).max() > 1e-3
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-3 * np.abs(ref).max())


def test_weights_are_stored_quantized_per_channel(conv_matmul_model, tmp_path):
    path, w, _ = conv_matmul_model
    out = str(tmp_path / "q.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    quantize(path, "int8", calibration_data=x, calibration_method="max", output_path=out)
    model = onnx.load(out)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert "W" not in inits
    assert "M" not in inits
    dq = next(
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0].startswith("W")
    )
    q, scale = inits[dq.input[0]], inits[dq.input[1]]
    assert q.dtype == np.int8
    assert scale.shape == (4,)
    np.testing.assert_allclose(scale, np.abs(w).reshape(4, -1).max(axis=1) / 127, rtol=1e-6)
    assert np.abs(q).max() == 127
    assert q.min() >= -127


def _fanout_residual_model():
    rng = np.random.default_rng(2)
    w1, w2 = (rng.standard_normal((3, 3, 1, 1)).astype(np.float32) for _ in range(2))
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["a"], name="c1"),
        helper.make_node("Conv", ["x", "W2"], ["b"], name="c2"),
        helper.make_node("Add", ["a", "x"], ["y"], name="residual"),
        helper.make_node("Mul", ["y", "b"], ["z"], name="mul"),
    ]
    return make_model(
        nodes,
        [fvi("x", [1, 3, 4, 4])],
        [fvi("z", [1, 3, 4, 4])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )


def test_fanout_shares_one_q_and_residual_add_is_left_alone(tmp_path):
    path = str(tmp_path / "fan.onnx")
    onnx.save(_fanout_residual_model(), path)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    out = str(tmp_path / "fan_q.onnx")
    quantize(
        path,
        "int8",
        calibration_data=x,
        calibration_method="max",
        output_path=out,
        qdq_placement="inputs",
    )
    model = onnx.load(out)
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert [n.input[0] for n in q_nodes] == ["x"]  # one shared Q for both convs
    add = next(n for n in model.graph.node if n.name == "residual")
    assert list(add.input) == ["a", "x"]  # the residual path stays float
    # Node units: the conv outputs get their Q too, the residual input x still reads float.
    out_u = str(tmp_path / "fan_u.onnx")
    quantize(path, "int8", calibration_data=x, calibration_method="max", output_path=out_u)
    model = onnx.load(out_u)
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert sorted(n.input[0] for n in q_nodes) == ["a", "b", "x"]
    add = next(n for n in model.graph.node if n.name == "residual")
    assert add.input[0].endswith("_dq")
    assert add.input[1] == "x"
    out2 = str(tmp_path / "fan_q2.onnx")
    quantize(
        path,
        "int8",
        calibration_data=x,
        calibration_method="max",
        output_path=out2,
        op_types_to_quantize=["Conv", "Add"],
    )
    add2 = next(n for n in onnx.load(out2).graph.node if n.name == "residual")
    assert all(i.endswith("_dq") for i in add2.input)
    run(out2, {"x": x})


def test_nodes_to_exclude_keeps_node_float(conv_matmul_model, tmp_path):
    path, _, _ = conv_matmul_model
    out = str(tmp_path / "ex.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    res = quantize(path, "int8", calibration_data=x, output_path=out, nodes_to_exclude=["m*"])
    assert res.quantized_nodes == ["conv"]
    assert "mm" in res.skipped
    mm = next(n for n in onnx.load(out).graph.node if n.name == "mm")
    assert mm.input[1] == "M"


def test_high_precision_fp16_after_int8(conv_matmul_model, tmp_path):
    path = conv_matmul_model[0]
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    out32, out16 = str(tmp_path / "q32.onnx"), str(tmp_path / "q16.onnx")
    quantize(path, "int8", calibration_data=x, calibration_method="max", output_path=out32)
    res = quantize(
        path,
        "int8",
        calibration_data=x,
        calibration_method="max",
        output_path=out16,
        high_precision_dtype="fp16",
    )
    model = onnx.load(out16)
    onnx.checker.check_model(model, full_check=True)
    assert res.opset == 19
    dtypes = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes  # scales / remaining floats are fp16 now
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    a, b = run(out16, {"x": x})[0], run(out32, {"x": x})[0]
    np.testing.assert_allclose(a, b, rtol=0, atol=0.02 * np.abs(b).max())


def test_skip_sensitive_nodes_keeps_the_fragile_one_float(tmp_path):
    path, data = fragile_pair(tmp_path, z_scale=0.01, outlier=50.0)
    path = str(path)
    out = str(tmp_path / "s.onnx")
    res = quantize(
        path,
        "int8",
        calibration_data=data,
        calibration_method="max",
        output_path=out,
        skip_sensitive_nodes=1,
        calibration_batch_size=8,
    )
    assert res.quantized_nodes == ["plain"]
    assert res.skipped["fragile"].startswith("sensitive")
    full = str(tmp_path / "f.onnx")
    quantize(
        path,
        "int8",
        calibration_data=data,
        calibration_method="max",
        output_path=full,
        calibration_batch_size=8,
    )
    ref = run(path, data)[0]
    assert np.abs(run(out, data)[0] - ref).mean() < 0.7 * np.abs(run(full, data)[0] - ref).mean()


def test_shared_initializer_gets_one_dq_and_float_user_keeps_it(tmp_path):
    rng = np.random.default_rng(6)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm1"),
        helper.make_node("MatMul", ["a", "W"], ["b"], name="mm2"),
        helper.make_node("Add", ["b", "W"], ["y"], name="add_w"),  # float user of W
    ]
    model = make_model(
        nodes, [fvi("x", ["N", 8])], [fvi("y", [8, 8])], [numpy_helper.from_array(w, "W")]
    )
    path, out = str(tmp_path / "sh.onnx"), str(tmp_path / "shq.onnx")
    onnx.save(model, path)
    x = rng.standard_normal((8, 8)).astype(np.float32)
    quantize(
        path,
        "int8",
        calibration_data=x,
        calibration_method="max",
        output_path=out,
        calibration_batch_size=8,
    )
    q = onnx.load(out)
    dqs = [
        n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("W")
    ]
    assert len(dqs) == 1
    by_name = {n.name: n for n in q.graph.node}
    assert by_name["mm1"].input[1] == by_name["mm2"].input[1] == dqs[0].output[0]
    assert by_name["add_w"].input[1] == "W"
    ref = run(path, {"x": x})[0]
    np.testing.assert_allclose(run(out, {"x": x})[0], ref, atol=0.05 * np.abs(ref).max())


def test_int8_mode_defaults_to_uint8_activations(conv_matmul_model, tmp_path):
    path, _, _ = conv_matmul_model
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "d.onnx"
    quantize(path, "int8", calibration_data=x, output_path=out)
    model = onnx.load(out)
    inits = {i.name: i for i in model.graph.initializer}
    act_zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert act_zps
    assert all(z.data_type == onnx.TensorProto.UINT8 for z in act_zps)
    # Weights stay symmetric int8 per channel.
    w_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert w_dq
    assert all(inits[n.input[0]].data_type == onnx.TensorProto.INT8 for n in w_dq)
