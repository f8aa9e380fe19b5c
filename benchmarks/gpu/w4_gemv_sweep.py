"""W4A16 decode (M=1) on the GPU: the word-wise INT4 GEMV over its tile space vs the bf16 GEMV.

Times ``F.linear`` on the bf16 weight (baseline, same run), the byte-wise GEMV default, and
each word-kernel config (BLOCK_N x BLOCK_K x warps x X2D, FOLD on; then FOLD off and pipeline
depths for the best). Weights rotate over 6 copies (6 x 32 MiB > L2). Prints a table with the
ratio to bf16, GB/s on the packed bytes, and the error against float64.

    python benchmarks/gpu/w4_gemv_sweep.py [--size 8192] [--json F]
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench, do_bench_cudagraph

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends import w4a16

_KEYS = (
    "GEMV_WORDS_BLOCK_N",
    "GEMV_WORDS_BLOCK_K",
    "GEMV_WORDS_WARPS",
    "GEMV_WORDS_X2D",
    "GEMV_WORDS_FOLD",
    "GEMV_WORDS_STAGES",
)


def _set(cfg: tuple) -> None:
    for k, v in zip(_KEYS, cfg, strict=True):
        setattr(w4a16, k, v)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--json", default="")
    p.add_argument("--block-n", default="4,8,16,32")
    p.add_argument("--block-k", default="1024,2048,4096")
    p.add_argument("--warps", default="4,8")
    a = p.parse_args()
    n = k = a.size
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; torch {torch.__version__}; triton {triton.__version__}")
    torch.manual_seed(0)
    copies = 6
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    xs = [torch.randn(1, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    qws = [B.quantize_int4(w, 128) for w in ws]
    moved = qws[0].data.numel() + qws[0].scale.numel() * qws[0].scale.element_size()
    ref = xs[0].double() @ qws[0].dequantize(torch.float64).T
    it = itertools.cycle(range(copies))

    def bench(fn) -> float:
        """Per-call ms replayed from a CUDA graph of all copies (no host launch cost)."""
        fn(0)  # compile outside the capture
        return float(do_bench_cudagraph(lambda: [fn(i) for i in range(copies)], rep=100)) / copies

    def bench_eager(fn) -> float:
        """Per-call ms with a host launch per call (what an eager decode loop sees)."""
        return float(do_bench(lambda: fn(next(it)), warmup=25, rep=100, return_mode="median"))

    def rel(y: torch.Tensor) -> float:
        return ((y.double() - ref).norm() / ref.norm()).item()

    t_bf16 = bench(lambda i: F.linear(xs[i], ws[i]))
    rows = [{"case": "bf16 GEMV (F.linear)", "us": t_bf16 * 1e3, "x_bf16": 1.0, "err": 0.0}]
    w4a16.GEMV_WORDS = False
    t_old = bench(lambda i: w4a16.w4a16_linear(xs[i], qws[i], None))
    rows.append(
        {
            "case": "byte GEMV default",
            "us": t_old * 1e3,
            "x_bf16": t_bf16 / t_old,
            "err": rel(w4a16.w4a16_linear(xs[0], qws[0], None)),
        }
    )
    w4a16.GEMV_WORDS = True
    default = tuple(getattr(w4a16, k) for k in _KEYS)
    results = []
    ints = [[int(v) for v in t.split(",")] for t in (a.block_n, a.block_k, a.warps)]
    space = itertools.product(*ints, (False,))
    configs = [(*c, True, 1) for c in space]
    for cfg in configs:
        _set(cfg)
        try:
            t = bench(lambda i: w4a16.w4a16_linear(xs[i], qws[i], None))
            err = rel(w4a16.w4a16_linear(xs[0], qws[0], None))
        except Exception as e:  # a config that does not compile or run: report, go on
            print(f"  {cfg} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
            continue
        results.append((t, cfg, err))
        print(f"  words {cfg}: {t * 1e3:.1f} us ({t_bf16 / t:.2f}x bf16) err {err:.1e}", flush=True)
    results.sort()
    best = results[0][1]
    extra = [(*best[:4], False, 1), (*best[:5], 2), (*best[:5], 3)]
    for _t, cfg, _err in results[1:3]:
        extra += [(*cfg[:5], 3)]
    for cfg in extra:
        _set(cfg)
        t = bench(lambda i: w4a16.w4a16_linear(xs[i], qws[i], None))
        err = rel(w4a16.w4a16_linear(xs[0], qws[0], None))
        results.append((t, cfg, err))
        print(f"  words {cfg}: {t * 1e3:.1f} us ({t_bf16 / t:.2f}x bf16) err {err:.1e}", flush=True)
    results.sort()
    _set(default)
    t_def = bench(lambda i: w4a16.w4a16_linear(xs[i], qws[i], None))
    rows.append(
        {
            "case": f"words default {default}",
            "us": t_def * 1e3,
            "x_bf16": t_bf16 / t_def,
            "err": rel(w4a16.w4a16_linear(xs[0], qws[0], None)),
        }
    )
    for t, cfg, err in results[:5]:
        rows.append({"case": f"words {cfg}", "us": t * 1e3, "x_bf16": t_bf16 / t, "err": err})
    print(f"\nW4A16 decode 1x{k} @ {n}x{k} INT4 g128, {dev}; packed bytes {moved / 1e6:.1f} MB")
    print("keys: (BLOCK_N, BLOCK_K, warps, X2D, FOLD, stages); x bf16 = bf16 graph time / time")
    print("| case | us | GB/s | x bf16 | rel err |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        gbs = (
            moved / r["us"] / 1e3
            if r["case"].startswith(("byte", "words"))
            else (n * k * 2 / r["us"] / 1e3)
        )
        print(f"| {r['case']} | {r['us']:.1f} | {gbs:.0f} | {r['x_bf16']:.2f} | {r['err']:.1e} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "device": dev,
                    "rows": rows,
                    "all": [(t * 1e3, list(c), e) for t, c, e in results],
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
