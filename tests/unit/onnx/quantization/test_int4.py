"""INT4 weight-only: blocked numerics, opset-21 DQ graph, MatMulNBits, AWQ."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from modeloptim.onnx.quantization import quantize
from modeloptim.onnx.quantization.int4 import (
    awq_clip_amax,
    awq_lite_scale,
    fake_quantize_blocked,
    pack_matmul_nbits,
    quantize_blocked,
)
from tests.unit.onnx.conftest import fvi, make_model, run


def ref_block_fq(w, block):
    """float64 reference: blocks of `block` rows along axis 0, [-7, 7], half-to-even."""
    out = np.empty_like(w, dtype=np.float64)
    for s in range(0, w.shape[0], block):
        blk = w[s : s + block].astype(np.float64)
        amax = np.abs(blk).max(axis=0)
        scale = np.where(amax > 2**-24, amax / 7, 1.0)
        out[s : s + block] = np.clip(np.round(blk / scale), -7, 7) * scale
    return out


def test_blocked_fake_quant_matches_reference():
    w = np.random.default_rng(0).standard_normal((80, 6)).astype(np.float32)  # 80 = 2.5 blocks
    w[:32, 0] = 0.0  # an all-zero block quantizes to zero with scale 1
    got = fake_quantize_blocked(w, 0, 32)
    np.testing.assert_allclose(got, ref_block_fq(w, 32), rtol=1e-6, atol=1e-7)
    q, scale = quantize_blocked(w, 0, 32)
    assert scale.shape == (3, 6)
    assert scale[0, 0] == 1.0
    assert np.asarray(q, np.int8).min() >= -7
    assert np.asarray(q, np.int8).max() <= 7


def _linear_model(w, b=None, gemm=False):
    if gemm:  # Gemm with transB: weight stored (N, K)
        nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="lin", transB=1)]
        inits = [numpy_helper.from_array(w.T.copy(), "W"), numpy_helper.from_array(b, "B")]
    else:
        nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="lin")]
        inits = [numpy_helper.from_array(w, "W")]
    k, n = w.shape
    return make_model(nodes, [fvi("x", ["M", k])], [fvi("y", ["M", n])], inits)


@pytest.mark.parametrize("gemm", [False, True])
def test_int4_dq_graph_runs_and_matches_numpy(tmp_path, gemm):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 24)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    path, out = str(tmp_path / "lin.onnx"), str(tmp_path / "lin4.onnx")
    onnx.save(_linear_model(w, b, gemm), path)
    res = quantize(path, "int4", calibration_method="rtn", block_size=16, output_path=out)
    assert res.opset == 21
    assert res.quantized_nodes == ["lin"]
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear")
    attrs = {a.name: a.i for a in dq.attribute}
    assert attrs == {"axis": 1 if gemm else 0, "block_size": 16}
    init = next(i for i in model.graph.initializer if i.name == dq.input[0])
    assert init.data_type == onnx.TensorProto.INT4
    x = rng.standard_normal((5, 64)).astype(np.float32)
    ref = x.astype(np.float64) @ ref_block_fq(w, 16) + (b if gemm else 0)
    np.testing.assert_allclose(run(out, {"x": x}, optimize=False)[0], ref, rtol=1e-5, atol=1e-4)
    # Optimized onnxruntime (fused MatMulNBits, int8 activations) stays close.
    np.testing.assert_allclose(run(out, {"x": x})[0], ref, atol=0.02 * np.abs(ref).max())


def test_matmul_nbits_packing_matches_dq_path(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((96, 20)).astype(np.float32)  # K=96 is not a multiple of 64
    path = str(tmp_path / "lin.onnx")
    onnx.save(_linear_model(w), path)
    nb, dq = str(tmp_path / "nb.onnx"), str(tmp_path / "dq.onnx")
    quantize(
        path, "int4", calibration_method="rtn", block_size=64, output_path=nb, use_matmul_nbits=True
    )
    quantize(path, "int4", calibration_method="rtn", block_size=64, output_path=dq)
    assert any(n.op_type == "MatMulNBits" for n in onnx.load(nb).graph.node)
    x = rng.standard_normal((3, 96)).astype(np.float32)
    ref = x.astype(np.float64) @ ref_block_fq(w, 64)
    np.testing.assert_allclose(run(nb, {"x": x})[0], ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(run(dq, {"x": x}, optimize=False)[0], ref, rtol=1e-5, atol=1e-4)


def test_pack_matmul_nbits_low_nibble_first():
    q = np.array([[1], [-2], [7], [-7]], dtype=np.int8)
    packed, scales = pack_matmul_nbits(q, np.array([[0.5]], np.float32), 4)
    # values + 8: 9, 6, 15, 1 -> bytes (6 << 4 | 9), (1 << 4 | 15)
    assert packed.tolist() == [[[0x69, 0x1F]]]
    assert scales.tolist() == [0.5]


def _outlier_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    x[:, :4] *= 30.0  # a few salient input channels, as in LLM activations
    w = rng.standard_normal((64, 32)).astype(np.float32)
    return x, w


def test_awq_lite_beats_rtn_on_salient_channels():
    x, w = _outlier_data()
    ref = x @ w
    rtn = np.square(x @ fake_quantize_blocked(w, 0, 32) - ref).mean()
    s, alpha = awq_lite_scale(w, x, 32)
    awq = np.square((x / s) @ fake_quantize_blocked(w * s[:, None], 0, 32) - ref).mean()
    assert alpha > 0
    assert awq < 0.8 * rtn


def test_awq_clip_never_worse_than_rtn():
    x, w = _outlier_data(1)
    ref = x @ w
    rtn = np.square(x @ fake_quantize_blocked(w, 0, 32) - ref).sum()
    amax = awq_clip_amax(w, x, 32)
    clip = np.square(x @ fake_quantize_blocked(w, 0, 32, amax) - ref).sum()
    assert clip <= rtn
    assert np.any(amax < np.abs(w).reshape(2, 32, 32).max(axis=1))


@pytest.mark.parametrize("method", ["awq_lite", "awq_clip"])
def test_awq_graph_runs_and_improves_output(tmp_path, method):
    x, w = _outlier_data(2)
    path, out, out_rtn = (str(tmp_path / n) for n in ("l.onnx", "a.onnx", "r.onnx"))
    onnx.save(_linear_model(w), path)
    quantize(
        path,
        "int4",
        calibration_data=x[:128],
        calibration_method=method,
        block_size=32,
        output_path=out,
        calibration_batch_size=32,
    )
    quantize(path, "int4", calibration_method="rtn", block_size=32, output_path=out_rtn)
    ref = x[128:] @ w
    err = np.square(run(out, {"x": x[128:]}, optimize=False)[0] - ref).mean()
    err_rtn = np.square(run(out_rtn, {"x": x[128:]}, optimize=False)[0] - ref).mean()
    assert err < err_rtn  # held-out rows


def test_gather_embedding_is_block_quantized(tmp_path):
    rng = np.random.default_rng(4)
    table = rng.standard_normal((50, 64)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["y"], name="emb")]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["N"])],
        [fvi("y", ["N", 64])],
        [numpy_helper.from_array(table, "E")],
    )
    path, out = str(tmp_path / "e.onnx"), str(tmp_path / "e4.onnx")
    onnx.save(model, path)
    quantize(path, "int4", calibration_method="rtn", block_size=32, output_path=out)
    ids = np.array([0, 7, 49], np.int64)
    ref = ref_block_fq(table.T, 32).T[ids]
    np.testing.assert_allclose(run(out, {"ids": ids})[0], ref, rtol=1e-6, atol=1e-6)


def test_matmul_nbits_keeps_gemm_alpha(tmp_path):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((32, 8)).astype(np.float32)
    model = make_model(
        [helper.make_node("Gemm", ["x", "W"], ["y"], name="g", alpha=0.5)],
        [fvi("x", ["M", 32])],
        [fvi("y", ["M", 8])],
        [numpy_helper.from_array(w, "W")],
    )
    path, out = str(tmp_path / "g.onnx"), str(tmp_path / "g4.onnx")
    onnx.save(model, path)
    res = quantize(
        path,
        "int4",
        calibration_method="rtn",
        block_size=16,
        output_path=out,
        use_matmul_nbits=True,
    )
    assert "alpha" in res.skipped["g"]  # left float rather than silently dropping alpha
    x = rng.standard_normal((3, 32)).astype(np.float32)
    ref = 0.5 * x.astype(np.float64) @ w
    np.testing.assert_allclose(run(out, {"x": x}, optimize=False)[0], ref, rtol=1e-5, atol=1e-4)
