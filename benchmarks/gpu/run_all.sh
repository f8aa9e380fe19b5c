#!/usr/bin/env bash
# One GPU batch: bit-exactness of every kernel (tests/gpu), then both benchmarks.
# Logs and JSON go to $OUT (the device tool's output folder) or ./gpu_out.
# Usage (repo root): bash benchmarks/gpu/run_all.sh [--quick]
# The lent GPU image has no pydantic (core needs it): carry its wheels, pip install them with
# --target /tmp/site and export PYTHONPATH=/tmp/site first (see benchmarks/gpu/NOTES.md).
set -u
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
QUICK=${1:-}
{
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu \
    --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/env.txt"
echo "=== tests/gpu"
timeout 170 python3 -m pytest -q -p no:cacheprovider --tb=short -rf tests/gpu 2>&1 \
  | tee "$OUT/tests_gpu.log" | tail -40
echo "=== fake_quant_bw"
FQ_ARGS="--compile-budget-s 110"
[ "$QUICK" = "--quick" ] && FQ_ARGS="--no-compile"
timeout 250 python3 benchmarks/gpu/fake_quant_bw.py $FQ_ARGS --json "$OUT/fake_quant_bw.json" \
  > "$OUT/fake_quant_bw.log" 2>&1
grep -E "^\||copy|device" "$OUT/fake_quant_bw.log" || tail -30 "$OUT/fake_quant_bw.log"
echo "=== gemm"
GEMM_ARGS="--sweep"
[ "$QUICK" = "--quick" ] && GEMM_ARGS=""
timeout 240 python3 benchmarks/gpu/gemm.py $GEMM_ARGS --json "$OUT/gemm.json" \
  > "$OUT/gemm.log" 2>&1
grep -E "^\||device" "$OUT/gemm.log" || tail -30 "$OUT/gemm.log"
