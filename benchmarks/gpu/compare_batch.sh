#!/usr/bin/env bash
# One device call comparing this tree with the baseline checkout beside it (before/after on
# the same machine). Run from the new tree (the device tool's copy: `cd .gpu_tree`), whose
# parent directory holds the baseline checkout.
#   bash benchmarks/gpu/compare_batch.sh host   # tests (changed parts) + host_overhead + e2e, old and new
#   bash benchmarks/gpu/compare_batch.sh gemv   # GEMM backend tests + the W4A16 GEMV sweep
#   bash benchmarks/gpu/compare_batch.sh e2e    # e2e (new) + host_overhead (new), once more
#   bash benchmarks/gpu/compare_batch.sh diag   # e2e FP8/NVFP4 with profiler tables, twice, + old
#   bash benchmarks/gpu/compare_batch.sh cprof  # e2e FP8/NVFP4 and bf16 under cProfile
#   bash benchmarks/gpu/compare_batch.sh final  # run_all.sh + host_overhead + a second e2e
# Logs go to $OUT with the prefix ${TAG:-s3}_.
set -u
OUT=${OUT:-$PWD/gpu_out}
TAG=${TAG:-s3}
NEW=$PWD
OLD=$(cd .. && pwd)
export PYTHONUNBUFFERED=1
base_pp=${PYTHONPATH:-}
run_new() { PYTHONPATH=$NEW${base_pp:+:$base_pp} "$@"; }
run_old() { (cd "$OLD" && PYTHONPATH=$OLD${base_pp:+:$base_pp} "$@"); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
case "${1:-host}" in
host)
  echo "=== tests (new tree): replay, backends, integration"
  run_new timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short -rf \
    tests/gpu/test_gpu_replay.py tests/gpu/test_gpu_backends.py tests/gpu/test_gpu_integration.py \
    tests/gpu/test_gpu_quantize_api.py 2>&1 | tee "$OUT/${TAG}_tests.log" | tail -15
  echo "=== host_overhead old"
  run_old timeout 120 python3 benchmarks/gpu/host_overhead.py 2>&1 | grep -v "calibrat" \
    | tee "$OUT/${TAG}_host_old.log" | grep "^|"
  echo "=== host_overhead new"
  run_new timeout 150 python3 benchmarks/gpu/host_overhead.py 2>&1 | grep -v "calibrat" \
    > "$OUT/${TAG}_host_new.log"; grep -E "^\||replaying" "$OUT/${TAG}_host_new.log"
  echo "=== e2e old (FP8, NVFP4)"
  run_old timeout 150 python3 benchmarks/gpu/e2e_llama.py --presets FP8_DEFAULT_CFG,NVFP4_DEFAULT_CFG \
    > "$OUT/${TAG}_e2e_old.log" 2>&1; grep -E "^\| [A-Zp-]|^baseline" "$OUT/${TAG}_e2e_old.log"
  echo "=== e2e new"
  run_new timeout 200 python3 benchmarks/gpu/e2e_llama.py > "$OUT/${TAG}_e2e_new.log" 2>&1
  grep -E "^\| [A-Zp-]|^baseline" "$OUT/${TAG}_e2e_new.log" || tail -20 "$OUT/${TAG}_e2e_new.log"
  ;;
gemv)
  run_new timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short -rf \
    tests/gpu/test_gpu_backends.py tests/gpu/test_gpu_replay.py 2>&1 | tee "$OUT/${TAG}_tests_backends.log" | tail -5
  run_new timeout 420 python3 benchmarks/gpu/w4_gemv_sweep.py ${GEMV_ARGS:-} --json "$OUT/${TAG}_gemv.json" \
    > "$OUT/${TAG}_gemv.log" 2>&1; grep -E "^\||^bf16|^W4A16|failed" "$OUT/${TAG}_gemv.log" | head -40
  ;;
e2e)
  run_new timeout 150 python3 benchmarks/gpu/host_overhead.py 2>&1 | grep -v "calibrat" \
    > "$OUT/${TAG}_host_new.log"; grep -E "^\|" "$OUT/${TAG}_host_new.log"
  run_new timeout 200 python3 benchmarks/gpu/e2e_llama.py > "$OUT/${TAG}_e2e_new.log" 2>&1
  grep -E "^\| [A-Zp-]|^baseline" "$OUT/${TAG}_e2e_new.log" || tail -20 "$OUT/${TAG}_e2e_new.log"
  ;;
diag)
  for i in a b; do
    run_new timeout 150 python3 benchmarks/gpu/e2e_llama.py --profile \
      --presets FP8_DEFAULT_CFG,NVFP4_DEFAULT_CFG > "$OUT/${TAG}_e2e_prof_$i.log" 2>&1
    grep -E "^\| [A-Zp-]|^bf16|CFG: quantize|Self CPU time total|Self CUDA time total" \
      "$OUT/${TAG}_e2e_prof_$i.log" | sed 's/.*\(FP8_DEF\|NVFP4_DEF\)/\1/' | sort -u
  done
  run_old timeout 150 python3 benchmarks/gpu/e2e_llama.py --presets FP8_DEFAULT_CFG,NVFP4_DEFAULT_CFG \
    > "$OUT/${TAG}_e2e_old.log" 2>&1; grep -E "^\| [A-Zp-]|^baseline" "$OUT/${TAG}_e2e_old.log"
  ;;
cprof)
  run_new timeout 200 python3 benchmarks/gpu/e2e_llama.py --cprofile \
    --presets FP8_DEFAULT_CFG,NVFP4_DEFAULT_CFG > "$OUT/${TAG}_e2e_cprof.log" 2>&1
  grep -E "^\| [A-Zp-]|^bf16|CFG: quantize" "$OUT/${TAG}_e2e_cprof.log"
  ;;
final)
  # the full batch (tests/gpu + kernels + gemm + e2e), then host_overhead and a second e2e;
  # everything in one archive ($OUT returns at most 8 files)
  work=$(mktemp -d)
  OUT=$work run_new bash benchmarks/gpu/run_all.sh 2>&1 | tee "$work/run_all_stdout.log"
  echo "=== host_overhead"
  run_new timeout 150 python3 benchmarks/gpu/host_overhead.py 2>&1 | grep -v "calibrat" \
    > "$work/host_overhead.log"; grep -E "^\|" "$work/host_overhead.log"
  echo "=== e2e (second run)"
  run_new timeout 200 python3 benchmarks/gpu/e2e_llama.py > "$work/e2e_b.log" 2>&1
  grep -E "^\| [A-Zp-]|^bf16|CFG: quantize" "$work/e2e_b.log" | sed 's/.*\(FP8_DEF\|NVFP4_DEF\|INT4_AWQ\)/\1/'
  tar -czf "$OUT/${TAG}_final.tgz" -C "$work" .
  ;;
order)
  # host_overhead, then e2e with NVFP4 alone and with FP8 first (is the second preset slow?)
  run_new timeout 150 python3 benchmarks/gpu/host_overhead.py 2>&1 | grep -v "calibrat" \
    > "$OUT/${TAG}_host_new.log"; grep -E "^\|" "$OUT/${TAG}_host_new.log"
  for presets in NVFP4_DEFAULT_CFG FP8_DEFAULT_CFG,NVFP4_DEFAULT_CFG NVFP4_DEFAULT_CFG,FP8_DEFAULT_CFG; do
    run_new timeout 150 python3 benchmarks/gpu/e2e_llama.py --presets $presets \
      > "$OUT/${TAG}_e2e_${presets//,/_}.log" 2>&1
    echo "--- $presets"
    grep -E "^bf16|CFG: quantize" "$OUT/${TAG}_e2e_${presets//,/_}.log" \
      | sed 's/.*\(FP8_DEF\|NVFP4_DEF\)/\1/' | cut -c1-190
  done
  ;;
esac
