"""all-MiniLM-L6-v2 exported with torch.onnx.export: INT4 weight-only (rtn / awq_lite /
awq_clip, several block sizes): embedding cosine to FP32, file size, latency.

Usage: python benchmarks/onnx_minilm_int4.py [--sentences 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from onnx_common import print_table, time_calls

from modeloptim.onnx.evaluation.minilm import embeddings, export_minilm, tokenize
from modeloptim.onnx.evaluation.ocr import text_lines
from modeloptim.onnx.ort_utils import make_session
from modeloptim.onnx.quantization import quantize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=500)
    ap.add_argument("--calib", type=int, default=32)
    args = ap.parse_args()
    lines = text_lines(prose=False, max_len=120)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "minilm.onnx"
        tok = export_minilm(fp32)
        calib = tokenize(tok, lines[: args.calib])
        evaluation = tokenize(tok, lines[args.calib : args.calib + args.sentences])
        ref = embeddings(fp32, evaluation)
        bench = evaluation[:50]
        base_sess = make_session(fp32, threads=2)
        base_t = time_calls(lambda: [base_sess.run(None, f) for f in bench])
        rows = [["fp32", "-", 1.0, 1.0, 1.0, base_t * 1e3, 1.0]]
        configs = [
            ("rtn", 32, False),
            ("awq_lite", 32, False),
            ("awq_clip", 32, False),
            ("awq_lite", 64, False),
            ("awq_lite", 128, False),
            ("awq_lite", 32, True),
        ]
        for method, block, nbits in configs:
            out = Path(tmp) / f"{method}_{block}_{nbits}.onnx"
            res = quantize(
                fp32,
                "int4",
                calibration_data=calib,
                calibration_method=method,
                block_size=block,
                output_path=out,
                use_matmul_nbits=nbits,
            )
            cos = (embeddings(out, evaluation) * ref).sum(-1)
            sess = make_session(out, threads=2)
            t = time_calls(lambda s=sess: [s.run(None, f) for f in bench])
            rows.append(
                [
                    method + (" MatMulNBits" if nbits else " DQ-21"),
                    block,
                    float(np.mean(cos)),
                    float(np.min(cos)),
                    res.output_bytes / res.input_bytes,
                    t * 1e3,
                    t / base_t,
                ]
            )
    print_table(
        f"MiniLM-L6 int4 weight-only, {len(evaluation)} sentences (calibration {len(calib)})",
        [
            "method",
            "block",
            "cos mean",
            "cos min",
            "size / fp32",
            "50-sentence latency (ms)",
            "ratio to fp32",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
