"""Low-bit GEMM backends vs bf16 on the GPU, measured in one run.

* FP8 linear, M = N = K = 8192: ``torch._scaled_mm`` (per-tensor and row-wise scales), GEMM
  alone (operands already FP8) and the whole linear (dynamic activation quantization
  included), vs the bf16 ``F.linear``; ``use_fast_accum`` off and on.
* INT8 linear 8192^3 through ``torch._int_mm`` (GEMM alone and whole linear) vs bf16.
* W4A16 decode, M = 1, N = K = 8192: the Triton GEMV on packed INT4 (group 128) and NVFP4
  weights vs the bf16 GEMV, with weights rotated over several copies so L2 (50 MB) does not
  hold them; a sweep of GEMV tile configurations picks the best.

    python benchmarks/gpu/gemm.py [--size 8192] [--sweep] [--json F]
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends import fp8, int8, w4a16


def _bench(fn, reps: int = 200) -> float:
    return float(do_bench(fn, warmup=25, rep=reps, return_mode="median"))


def _rel(y: torch.Tensor, r: torch.Tensor) -> float:
    return float((y.float() - r.float()).norm() / r.float().norm())


class _Rotate:
    """Cycle through several operand copies so repeated calls do not hit in L2."""

    def __init__(self, items: list) -> None:
        self.items, self.i = items, 0

    def next(self):
        self.i = (self.i + 1) % len(self.items)
        return self.items[self.i]


def bench_fp8_int8(size: int, rows: list[dict]) -> None:
    m = n = k = size
    flops = 2 * m * n * k
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    t_bf16 = _bench(lambda: F.linear(x, w))
    ref = F.linear(x, w)
    rows.append(
        {
            "case": f"bf16 linear {m}x{n}x{k}",
            "us": t_bf16 * 1e3,
            "TFLOP/s": flops / t_bf16 / 1e9,
            "x_bf16": 1.0,
            "rel_err": 0.0,
        }
    )
    for per_channel, fast in itertools.product((False, True), (False, True)):
        fp8.FAST_ACCUM = fast
        qw = B.quantize_fp8(w, per_channel=per_channel)
        q, inv = fp8.quantize_activation_fp8(x, per_row=per_channel)
        tag = f"fp8 {'row-wise' if per_channel else 'per-tensor'}{' fast-acc' if fast else ''}"
        t_g = _bench(lambda qw=qw, q=q, inv=inv: fp8.fp8_gemm(q, inv, qw, torch.bfloat16))
        t_l = _bench(lambda qw=qw: fp8.fp8_linear(x, qw, None))
        err = _rel(fp8.fp8_linear(x, qw, None), ref)
        rows.append(
            {
                "case": tag + " GEMM only",
                "us": t_g * 1e3,
                "TFLOP/s": flops / t_g / 1e9,
                "x_bf16": t_bf16 / t_g,
                "rel_err": err,
            }
        )
        rows.append(
            {
                "case": tag + " linear",
                "us": t_l * 1e3,
                "TFLOP/s": flops / t_l / 1e9,
                "x_bf16": t_bf16 / t_l,
                "rel_err": err,
            }
        )
    fp8.FAST_ACCUM = False
    t_aq = _bench(lambda: fp8.quantize_activation_fp8(x, per_row=True))
    rows.append(
        {
            "case": "  fp8 act quant per-row",
            "us": t_aq * 1e3,
            "TFLOP/s": float("nan"),
            "x_bf16": float("nan"),
            "rel_err": float("nan"),
            "GB/s": 3 * m * k / t_aq / 1e6,
        }
    )
    qw8 = B.quantize_int8(w)
    qa, _ = int8.quantize_activation_int8(x)
    t_g = _bench(lambda: torch._int_mm(qa, qw8.data.t()))
    t_l = _bench(lambda: int8.int8_linear(x, qw8, None))
    err = _rel(int8.int8_linear(x, qw8, None), ref)
    rows.append(
        {
            "case": "int8 _int_mm GEMM only",
            "us": t_g * 1e3,
            "TFLOP/s": flops / t_g / 1e9,
            "x_bf16": t_bf16 / t_g,
            "rel_err": err,
        }
    )
    rows.append(
        {
            "case": "int8 linear (eager quant)",
            "us": t_l * 1e3,
            "TFLOP/s": flops / t_l / 1e9,
            "x_bf16": t_bf16 / t_l,
            "rel_err": err,
        }
    )


def bench_w4a16(size: int, rows: list[dict], sweep: bool) -> None:
    n = k = size
    copies = 6  # 6 x 32 MiB packed > L2
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    xs = [torch.randn(1, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    rot_bf16 = _Rotate(list(zip(xs, ws, strict=True)))
    t_bf16 = _bench(lambda: F.linear(*rot_bf16.next()))
    bytes_bf16 = n * k * 2
    rows.append(
        {
            "case": f"bf16 GEMV 1x{n}x{k}",
            "us": t_bf16 * 1e3,
            "GB/s": bytes_bf16 / t_bf16 / 1e6,
            "x_bf16": 1.0,
            "rel_err": 0.0,
        }
    )
    for fmt in ("int4", "nvfp4"):
        qws = [B.quantize_int4(w, 128) if fmt == "int4" else B.quantize_nvfp4(w) for w in ws]
        ref = xs[0].double() @ qws[0].dequantize(torch.float64).T
        moved = qws[0].data.numel() + qws[0].scale.numel() * qws[0].scale.element_size()
        rot = _Rotate(list(zip(xs, qws, strict=True)))
        default = (w4a16.GEMV_BLOCK_N, w4a16.GEMV_BLOCK_K, w4a16.GEMV_WARPS, w4a16.GEMV_STAGES)
        # INT4 runs the word-wise kernel (its tile: GEMV_WORDS_*); the byte-kernel sweep below
        # then only concerns NVFP4 (w4_gemv_sweep.py sweeps the word kernel)
        words = fmt == "int4" and w4a16.GEMV_WORDS
        label = (
            f"words {(w4a16.GEMV_WORDS_BLOCK_N, w4a16.GEMV_WORDS_BLOCK_K, w4a16.GEMV_WORDS_WARPS)}"
            if words
            else str(default)
        )
        configs = [default]
        if sweep:
            configs += list(itertools.product((4, 8, 16), (1024, 2048, 4096), (4, 8), (1, 3)))
        best = None
        for cfg in configs:
            w4a16.GEMV_BLOCK_N, w4a16.GEMV_BLOCK_K, w4a16.GEMV_WARPS, w4a16.GEMV_STAGES = cfg
            try:
                t = _bench(lambda rot=rot: w4a16.w4a16_linear(*rot.next(), None), reps=100)
            except Exception as err:  # a config that does not compile: skip it
                print(f"    {fmt} config {cfg} failed: {type(err).__name__}")
                continue
            err = _rel(w4a16.w4a16_linear(xs[0], qws[0], None), ref)
            if sweep:
                print(
                    f"    {fmt} BLOCK_N={cfg[0]} BLOCK_K={cfg[1]} warps={cfg[2]} "
                    f"stages={cfg[3]}: {t * 1e3:.1f} us ({t_bf16 / t:.2f}x bf16) err={err:.1e}",
                    flush=True,
                )
            if best is None or t < best[0]:
                best = (t, cfg, err)
        w4a16.GEMV_BLOCK_N, w4a16.GEMV_BLOCK_K, w4a16.GEMV_WARPS, w4a16.GEMV_STAGES = default
        t_def = _bench(lambda rot=rot: w4a16.w4a16_linear(*rot.next(), None), reps=200)
        rows.append(
            {
                "case": f"w4a16 {fmt} GEMV default {label} (eager launch)",
                "us": t_def * 1e3,
                "GB/s": moved / t_def / 1e6,
                "x_bf16": t_bf16 / t_def,
                "rel_err": _rel(w4a16.w4a16_linear(xs[0], qws[0], None), ref),
            }
        )
        assert best is not None
        t, cfg, err = best
        rows.append(
            {
                "case": f"w4a16 {fmt} GEMV best {label if words else cfg} (eager launch)",
                "us": t * 1e3,
                "GB/s": moved / t / 1e6,
                "x_bf16": t_bf16 / t,
                "rel_err": err,
            }
        )
        # larger M: fused tile kernel vs one-pass dequantization + cuBLAS (the default)
        max_m0 = w4a16.FUSED_GEMM_MAX_M
        for m in (16, 256, 2048):
            xm = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            tb = _bench(lambda xm=xm: F.linear(xm, ws[0]), reps=50)
            for fused in (True, False):
                w4a16.FUSED_GEMM = fused
                w4a16.FUSED_GEMM_MAX_M = 32 if fused else 0
                tm = _bench(lambda xm=xm, q=qws[0]: w4a16.w4a16_linear(xm, q, None), reps=50)
                rows.append(
                    {
                        "case": f"w4a16 {fmt} M={m} {'fused' if fused else 'dequant+cuBLAS'}",
                        "us": tm * 1e3,
                        "GB/s": float("nan"),
                        "x_bf16": tb / tm,
                        "rel_err": float("nan"),
                    }
                )
            w4a16.FUSED_GEMM, w4a16.FUSED_GEMM_MAX_M = False, max_m0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--sweep", action="store_true", help="sweep GEMV tile configurations")
    p.add_argument("--skip-fp8", action="store_true")
    p.add_argument("--json", default="")
    a = p.parse_args()
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; torch {torch.__version__}; triton {triton.__version__}")
    torch.manual_seed(0)
    rows: list[dict] = []
    steps = [] if a.skip_fp8 else [lambda: bench_fp8_int8(a.size, rows)]
    steps.append(lambda: bench_w4a16(a.size, rows, a.sweep))
    for step in steps:
        try:
            step()
        except Exception as err:  # keep the other measurements of this run
            print(f"step failed: {type(err).__name__}: {err}"[:500], flush=True)
        torch.cuda.empty_cache()
    print()
    print(f"GEMM backends, {dev}")
    print(f"| {'case':<40} | {'us':>9} | {'TFLOP/s':>8} | {'GB/s':>7} | {'x bf16':>6} | rel err |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 10}|{'-' * 9}|{'-' * 8}|---------|")
    for r in rows:
        print(
            f"| {r['case']:<40} | {r['us']:9.1f} | {r.get('TFLOP/s', float('nan')):8.0f} | "
            f"{r.get('GB/s', float('nan')):7.0f} | {r['x_bf16']:6.2f} | "
            f"{r['rel_err']:.1e} |"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": dev, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
