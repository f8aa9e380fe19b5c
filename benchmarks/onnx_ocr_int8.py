"""PP-OCRv4 (rapidocr) det + rec: INT8 vs FP32 exact-match OCR and onnxruntime latency.

Usage: python benchmarks/onnx_ocr_int8.py [--calib 32] [--lines 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from onnx_common import print_table, time_calls

from modeloptim.onnx.evaluation.ocr import (
    OcrPipeline,
    exact_match_rate,
    quantize_ocr_int8,
    rapidocr_model_paths,
    render_line,
    text_lines,
)
from modeloptim.onnx.ort_utils import make_session


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-sensitive", type=int, default=12)
    args = ap.parse_args()
    lines = text_lines()
    order = np.random.default_rng(0).permutation(len(lines))
    calib = [lines[i] for i in order[: args.calib]]
    evaluation = [lines[i] for i in order[args.calib : args.calib + args.lines]]
    fp32 = OcrPipeline(threads=args.threads)
    fp32.recording = True
    for k, text in enumerate(calib):
        fp32.read(render_line(text, k))
    fp32.recording = False
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = quantize_ocr_int8(fp32.det_inputs, fp32.rec_inputs, tmp, args.skip_sensitive)
        quant_s = time.perf_counter() - start
        images = [render_line(text, k) for k, text in enumerate(evaluation)]
        fp32.recording = True  # the evaluation inputs also serve as the latency workload
        ref = fp32.read_all(images)
        fp32.recording = False
        got = OcrPipeline(paths["det"], paths["rec"], threads=args.threads).read_all(images)
        det_in, rec_in = fp32.det_inputs[len(calib) :], fp32.rec_inputs[-len(images) :]
        src = rapidocr_model_paths()
        timing = {}
        for name, det_p, rec_p in (
            ("fp32", src["det"], src["rec"]),
            ("int8", paths["det"], paths["rec"]),
        ):
            det_s = make_session(det_p, threads=args.threads)
            rec_s = make_session(rec_p, threads=args.threads)
            sample_det, sample_rec = det_in[:20], rec_in[:20]
            timing[name] = (
                time_calls(lambda s=det_s, d=sample_det: [s.run(None, {"x": x}) for x in d])
                / len(sample_det),
                time_calls(lambda s=rec_s, d=sample_rec: [s.run(None, {"x": x}) for x in d])
                / len(sample_rec),
            )
        sizes = {
            k: (Path(src[k]).stat().st_size, Path(paths[k]).stat().st_size) for k in ("det", "rec")
        }
    match = exact_match_rate(ref, got)
    mismatches = [(a, b) for a, b in zip(ref, got, strict=True) if a != b]
    print_table(
        f"PP-OCRv4 int8 vs fp32 on {len(images)} rendered lines (calibration {len(calib)} lines)",
        ["metric", "value"],
        [
            ["exact-match int8 == fp32", f"{match:.3f}"],
            ["fp32 == ground truth", f"{exact_match_rate(evaluation, ref):.3f}"],
            ["int8 == ground truth", f"{exact_match_rate(evaluation, got):.3f}"],
            ["quantization time (s)", f"{quant_s:.1f}"],
            *[
                [f"{k} size fp32 -> int8 (MB)", f"{a / 1e6:.2f} -> {b / 1e6:.2f}"]
                for k, (a, b) in sizes.items()
            ],
        ],
    )
    print_table(
        f"onnxruntime CPU latency per call ({args.threads} threads, best of 3)",
        ["model", "fp32 (ms)", "int8 (ms)", "int8 / fp32"],
        [
            [
                m,
                timing["fp32"][i] * 1e3,
                timing["int8"][i] * 1e3,
                timing["int8"][i] / timing["fp32"][i],
            ]
            for i, m in enumerate(("det", "rec"))
        ],
    )
    for a, b in mismatches[:20]:
        print(f"  fp32: {a!r}\n  int8: {b!r}")


if __name__ == "__main__":
    main()
