"""PP-OCRv4 (rapidocr) det + rec: INT8 vs FP32 exact-match OCR and onnxruntime latency.

Calibration lines and evaluation lines are disjoint. Latency: both models in the same run,
same thread count, one warm-up call, median of ``--repeat`` passes over the same recorded
inputs, fp32 and int8 interleaved.

Usage: python benchmarks/onnx_ocr_int8.py [--calib 128] [--lines 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from onnx_common import cpu_int8_flags, median_latency, ort_kernel_counts, print_table

from modeloptim.onnx.evaluation.ocr import (
    OcrPipeline,
    exact_match_rate,
    quantize_ocr_int8,
    rapidocr_model_paths,
    render_line,
    text_lines,
)
from modeloptim.onnx.ort_utils import make_session

EVAL_START = 128  # evaluation lines start here in the shuffled order
KERNELS = ("QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "Conv", "FusedConv", "MatMul")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=128, help="at most 128 (evaluation after)")
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-sensitive", type=int, default=None)
    ap.add_argument("--sensitivity-samples", type=int, default=4)
    ap.add_argument("--det-method", default="max", help="det calibration method")
    ap.add_argument("--rec-method", default="max", help="rec calibration method")
    ap.add_argument("--no-bias-correction", action="store_true")
    args = ap.parse_args()
    if not 0 < args.calib <= EVAL_START:
        ap.error(f"--calib: expected 1..{EVAL_START}")
    lines = text_lines()
    order = np.random.default_rng(0).permutation(len(lines))
    calib = [lines[i] for i in order[: args.calib]]
    # Fixed evaluation lines for every --calib, disjoint from all calibration lines.
    evaluation = [lines[i] for i in order[EVAL_START : EVAL_START + args.lines]]
    fp32 = OcrPipeline(threads=args.threads)
    fp32.recording = True
    for k, text in enumerate(calib):
        fp32.read(render_line(text, k))
    fp32.recording = False
    kw: dict = {
        "calibration_methods": {"det": args.det_method, "rec": args.rec_method},
        "sensitivity_samples": args.sensitivity_samples,
        "bias_correction": not args.no_bias_correction,
    }
    if args.skip_sensitive is not None:
        kw["skip_sensitive"] = args.skip_sensitive
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = quantize_ocr_int8(fp32.det_inputs, fp32.rec_inputs, tmp, **kw)
        quant_s = time.perf_counter() - start
        images = [render_line(text, k) for k, text in enumerate(evaluation)]
        fp32.recording = True  # the evaluation inputs also serve as the latency workload
        ref = fp32.read_all(images)
        fp32.recording = False
        got = OcrPipeline(paths["det"], paths["rec"], threads=args.threads).read_all(images)
        det_in, rec_in = fp32.det_inputs[len(calib) :], fp32.rec_inputs[-len(images) :]
        src = rapidocr_model_paths()
        timing: dict[str, list[float]] = {"fp32": [], "int8": []}
        kernels = {}
        for key, inputs in (("det", det_in[:10]), ("rec", rec_in[:10])):
            sessions = {
                "fp32": make_session(src[key], threads=args.threads),
                "int8": make_session(paths[key], threads=args.threads),
            }
            kernels[key] = ort_kernel_counts(str(paths[key]))
            for name in ("fp32", "int8"):
                sessions[name].run(None, {"x": inputs[0]})
            per = {"fp32": [], "int8": []}
            for _ in range(args.repeat):  # interleaved, so load changes hit both alike
                for name, sess in sessions.items():
                    run_all = lambda s=sess, d=inputs: [s.run(None, {"x": x}) for x in d]  # noqa: E731
                    per[name].append(median_latency(run_all, repeat=1, warmup=0) / len(inputs))
            for name in per:
                timing[name].append(float(np.median(per[name])))
        sizes = {
            k: (Path(src[k]).stat().st_size, Path(paths[k]).stat().st_size) for k in ("det", "rec")
        }
    match = exact_match_rate(ref, got)
    mismatches = [(t, a, b) for t, a, b in zip(evaluation, ref, got, strict=True) if a != b]
    print_table(
        f"PP-OCRv4 int8 vs fp32 on {len(images)} rendered lines (calibration {len(calib)} "
        "other lines)",
        ["metric", "value"],
        [
            ["exact-match int8 == fp32", f"{match:.3f}"],
            ["fp32 == ground truth", f"{exact_match_rate(evaluation, ref):.3f}"],
            ["int8 == ground truth", f"{exact_match_rate(evaluation, got):.3f}"],
            [
                "mismatches where int8 is right, fp32 wrong",
                str(sum(t == b for t, _, b in mismatches)),
            ],
            ["quantization time (s)", f"{quant_s:.1f}"],
            *[
                [f"{k} size fp32 -> int8 (MB)", f"{a / 1e6:.2f} -> {b / 1e6:.2f}"]
                for k, (a, b) in sizes.items()
            ],
            *[
                [f"{k} onnxruntime kernels (int8)", str({o: c[o] for o in KERNELS if o in c})]
                for k, c in kernels.items()
            ],
        ],
    )
    print_table(
        f"onnxruntime CPU latency per call ({args.threads} threads, median of {args.repeat}; "
        f"CPU flags {cpu_int8_flags()})",
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
    for truth, a, b in mismatches[:20]:
        print(f"  truth: {truth!r}\n  fp32:  {a!r}\n  int8:  {b!r}")


if __name__ == "__main__":
    main()
