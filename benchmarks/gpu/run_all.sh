#!/usr/bin/env bash
# One GPU batch: bit-exactness of every kernel (tests/gpu), the kernel benchmarks, the
# end-to-end 0.84B LLaMA benchmark. GEMV_SWEEP=1 adds the W4A16 decode tile sweep
# (w4_gemv_sweep.py, ~100 s); gemm.py's old byte-kernel sweep runs with GEMM_SWEEP=1.
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
GEMM_ARGS=""
[ "${GEMM_SWEEP:-0}" = "1" ] && GEMM_ARGS="--sweep"
timeout 240 python3 benchmarks/gpu/gemm.py $GEMM_ARGS --json "$OUT/gemm.json" \
  > "$OUT/gemm.log" 2>&1
grep -E "^\||device" "$OUT/gemm.log" || tail -30 "$OUT/gemm.log"
if [ "${GEMV_SWEEP:-0}" = "1" ]; then
  echo "=== w4_gemv_sweep"
  timeout 200 python3 benchmarks/gpu/w4_gemv_sweep.py --json "$OUT/w4_sweep.json" \
    > "$OUT/w4_sweep.log" 2>&1
  grep -E "^\||device" "$OUT/w4_sweep.log" || tail -20 "$OUT/w4_sweep.log"
fi
echo "=== w4_small_m"
timeout 120 python3 benchmarks/gpu/w4_small_m.py > "$OUT/w4_small_m.log" 2>&1
grep -E "^\||device" "$OUT/w4_small_m.log" || tail -20 "$OUT/w4_small_m.log"
echo "=== e2e_llama"
timeout 300 python3 benchmarks/gpu/e2e_llama.py --profile --json "$OUT/e2e.json" \
  > "$OUT/e2e.log" 2>&1
grep -E "^\| [A-Zp-]|^baseline|^model|^device" "$OUT/e2e.log" || tail -30 "$OUT/e2e.log"
