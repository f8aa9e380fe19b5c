"""magika: INT8 / FP8 / FP16 top-1 agreement with FP32 on real files, and latency.

Usage: python benchmarks/onnx_magika.py [--files 2000] [--calib 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from onnx_common import print_table, time_calls

from modeloptim.onnx.autocast import convert_to_mixed_precision
from modeloptim.onnx.evaluation.magika_eval import (
    file_features,
    magika_model_path,
    sample_files,
    top1,
)
from modeloptim.onnx.ort_utils import make_session
from modeloptim.onnx.quantization import quantize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    calib = file_features(sample_files(args.calib, seed=1))
    feats = file_features(sample_files(args.files, seed=1, skip=args.calib))
    src = magika_model_path()
    ref = top1(src, feats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"fp32": str(src)}
        for mode, method, act in (
            ("int8", "max", "uint8"),  # the defaults
            ("int8", "max", "int8"),  # TensorRT's symmetric activations
            ("int8", "entropy", "uint8"),
            ("int8", "entropy", "int8"),
            ("int8", "percentile", "int8"),
            ("fp8", "max", "fp8"),
        ):
            res = quantize(
                src,
                mode,
                calibration_data=calib,
                calibration_method=method,
                output_path=Path(tmp) / f"{mode}_{method}_{act}.onnx",
                calibration_batch_size=16,
                activation_type=act,
            )
            variants[f"{mode} ({method}, {act} activations)"] = res.output_path
        ac = convert_to_mixed_precision(
            src, "fp16", reference_data=calib, output_path=Path(tmp) / "fp16.onnx"
        )
        variants["fp16 (autocast)"] = ac.output_path
        batch = feats[:256]
        base = None
        for name, path in variants.items():
            sess = make_session(path, threads=args.threads)
            t = time_calls(lambda s=sess: s.run(None, {"bytes": batch}))
            base = base or t
            agree = (top1(path, feats) == ref).mean()
            rows.append([name, f"{agree:.4f}", t * 1e3, t / base, Path(path).stat().st_size / 1e6])
    print_table(
        f"magika standard_v3_3 on {len(feats)} real files (calibration {len(calib)} other files)",
        ["model", "top-1 agreement with fp32", "batch-256 latency (ms)", "ratio to fp32", "MB"],
        rows,
    )
    print("fp16 kept in fp32:")
    for node, why in ac.kept.items():
        print(f"  {node}: {why}")


if __name__ == "__main__":
    main()
