"""Quantize an ONNX model directly: magika file-type classifier to INT8 and FP16, offline.

The model ships inside the ``magika`` package; the data are real files on this machine (a
calibration set and a disjoint test set). ``modeloptim.onnx.quantization.quantize`` inserts
QuantizeLinear/DequantizeLinear pairs calibrated with onnxruntime;
``convert_to_mixed_precision`` converts to FP16 and keeps in FP32 what measurably overflows
or loses accuracy. Both are compared with the FP32 model's top-1 predictions.

Example::

    python examples/onnx_ptq.py --files 1000 --calib 64
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from modeloptim.onnx.autocast import convert_to_mixed_precision
from modeloptim.onnx.evaluation.magika_eval import (
    file_features,
    magika_model_path,
    sample_files,
    top1,
)
from modeloptim.onnx.quantization import quantize


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the example; returns the top-1 agreement with FP32 of each converted model."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000, help="test files (real files on disk)")
    ap.add_argument("--calib", type=int, default=64, help="calibration files (disjoint)")
    args = ap.parse_args(argv)
    calib = file_features(sample_files(args.calib, seed=1))
    test = file_features(sample_files(args.files, seed=1, skip=args.calib))
    src = magika_model_path()
    reference = top1(src, test)
    agreement: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Default: uint8 activations x int8 weights, what onnxruntime's x86 kernels run
        # fastest; for TensorRT pass activation_type="int8" (symmetric, zero point 0).
        int8 = quantize(src, "int8", calibration_data=calib, output_path=Path(tmp) / "int8.onnx")
        agreement["int8"] = float((top1(int8.output_path, test) == reference).mean())
        fp16 = convert_to_mixed_precision(
            src, "fp16", reference_data=calib, output_path=Path(tmp) / "fp16.onnx"
        )
        agreement["fp16"] = float((top1(fp16.output_path, test) == reference).mean())
        sizes = {
            name: Path(p).stat().st_size / 1e6
            for name, p in (("fp32", src), ("int8", int8.output_path), ("fp16", fp16.output_path))
        }
    print(f"\n{'model':<6}{'top-1 agreement with fp32':>28}{'MB':>8}")
    print(f"{'fp32':<6}{1.0:>28.4f}{sizes['fp32']:>8.2f}")
    for name, a in agreement.items():
        print(f"{name:<6}{a:>28.4f}{sizes[name]:>8.2f}")
    print(f"fp16 nodes kept in fp32: {len(fp16.kept)}")
    return agreement


if __name__ == "__main__":
    main()
