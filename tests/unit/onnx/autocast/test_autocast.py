"""FP16/BF16 autocast: measured fallbacks, casts, numerics against onnxruntime fp32."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from modeloptim.onnx.autocast import convert_to_mixed_precision
from tests.unit.onnx.conftest import fvi, make_model, run


def _model(tmp_path):
    """x -> MatMul(W) -> Mul(1000) [overflows fp16] -> ReduceMean -> Sub(x0 - 1e4 offset)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "big"], ["m"], name="scale_up"),  # values ~1e4..1e5
        helper.make_node("Div", ["m", "big"], ["d"], name="scale_down"),
        # Cancellation: (d + 3000) - 3000 loses d's low bits in fp16 (spacing 2 near 3000).
        helper.make_node("Add", ["d", "off"], ["a"], name="add_offset"),
        helper.make_node("Sub", ["a", "off"], ["y"], name="sub_offset"),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.float32(3e4), "big"),
        numpy_helper.from_array(np.float32(3000.0), "off"),
    ]
    model = make_model(nodes, [fvi("x", ["N", 16])], [fvi("y", ["N", 16])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return str(path)


def test_fp16_keeps_overflowing_and_lossy_nodes_in_fp32(tmp_path):
    path = _model(tmp_path)
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    out = str(tmp_path / "h.onnx")
    report = convert_to_mixed_precision(path, "fp16", reference_data=x, output_path=out)
    assert set(report.converted) >= {"mm", "relu"}
    assert "overflow" in report.kept["scale_up"]
    assert "overflow" in report.kept["scale_down"]  # its input overflows
    # a = d + 3000 is fine in fp16 on its own, but a - 3000 then loses d entirely: the Sub is
    # measured as lossy, and the Add that produces its input stays fp32 with it.
    assert "relative error" in report.kept["sub_offset"]
    assert "feeds 'sub_offset'" in report.kept["add_offset"]
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert any(t == onnx.TensorProto.FLOAT16 for t in types.values())
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # Unoptimized: onnxruntime's optimizer would drop fp32->fp16->fp32 Cast pairs and hide loss.
    got, ref = run(out, {"x": x}, optimize=False)[0], run(path, {"x": x})[0]
    # fp16 MatMul/Relu only: error of a few fp16 ulps, far below what full fp16 would give.
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-3 * np.abs(ref).max())
    assert report.output_max_rel_error["y"] < 5e-3


def test_fp16_everything_when_safe_and_io_types_converted(tmp_path):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Sigmoid", ["h"], ["y"], name="sig"),
        ],
        [fvi("x", ["N", 8])],
        [fvi("y", ["N", 4])],
        [numpy_helper.from_array(w, "W")],
    )
    path, out = str(tmp_path / "s.onnx"), str(tmp_path / "s16.onnx")
    onnx.save(model, path)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    report = convert_to_mixed_precision(
        path, "fp16", keep_io_types=False, reference_data=x, output_path=out
    )
    assert report.kept == {}
    assert report.casts_inserted == 0
    conv = onnx.load(out)
    assert conv.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    got = run(out, {"x": x.astype(np.float16)})[0]
    assert got.dtype == np.float16
    # Independent reference: the same math with fp16 rounding of inputs and weights.
    ref = 1 / (1 + np.exp(-(x.astype(np.float16).astype(np.float64) @ w.astype(np.float16))))
    np.testing.assert_allclose(got.astype(np.float64), ref, atol=2e-3)


def test_bf16_follows_operator_schemas(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    model = make_model(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        [fvi("x", [1, 3, 5, 5])],
        [fvi("y", [1, 2, 3, 3])],
        [numpy_helper.from_array(w, "W")],
        opset=17,
    )
    path, out = str(tmp_path / "c.onnx"), str(tmp_path / "cbf.onnx")
    onnx.save(model, path)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    report = convert_to_mixed_precision(path, "bf16", reference_data=x, output_path=out)
    assert "schema" in report.kept["conv"]  # Conv has no bfloat16 form before opset 22
    assert report.converted == ["relu"]
    conv = onnx.load(out)
    onnx.checker.check_model(conv, full_check=True)
    # onnxruntime's CPU provider has no bf16 kernels: check with the ONNX reference runtime.
    from onnx.reference import ReferenceEvaluator

    got = ReferenceEvaluator(conv).run(None, {"x": x})[0]
    ref = run(path, {"x": x})[0]
    bf = ref.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_allclose(got, bf, rtol=0, atol=1e-6)


def test_bad_low_precision_type(tmp_path):
    with pytest.raises(ValueError, match="low_precision_type: unknown 'fp8'"):
        convert_to_mixed_precision(_model(tmp_path), "fp8")
