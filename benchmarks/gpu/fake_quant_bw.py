"""Fake-quant bandwidth on the GPU: Triton kernels vs eager PyTorch vs torch.compile vs copy.

One run, one 16384 x 8192 bf16 tensor (256 MiB). For each format it times the Triton kernel,
the eager PyTorch reference of the same math (``triton/reference.py``) and ``torch.compile`` of
that reference, reports GB/s (bytes read + written, the fewest a fused kernel must move) and
the ratios, the fraction of the measured device-to-device copy bandwidth, whether the kernel is
bit-exact with eager, and the first-call time of each kernel (compile included, cold cache).

    python benchmarks/gpu/fake_quant_bw.py [--rows 16384 --cols 8192] [--no-compile] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

# cold compile caches so "first call" includes the build, as on a user's first use
os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="mo_triton_cache_"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="mo_inductor_cache_"))

import torch
import triton
from triton.testing import do_bench

from modeloptim.torch.quantization.triton import blockwise as bw
from modeloptim.torch.quantization.triton import elementwise as ew
from modeloptim.torch.quantization.triton import reference as ref


def _bench(fn, reps: int = 100) -> float:
    return float(do_bench(fn, warmup=25, rep=reps, return_mode="median"))


def _first_call(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def _cases(x: torch.Tensor, g: torch.Tensor):
    """(name, triton fn, reference fn, args, bytes moved)."""
    n = x.numel() * x.element_size()
    xf_abs_max = x.float().abs().amax()
    per_row = x.float().abs().amax(dim=1, keepdim=True)
    per_col = x.float().abs().amax(dim=0, keepdim=True)
    x128, x16, x32 = x.view(-1, 128), x.view(-1, 16), x.view(-1, 32)
    cases = [
        ("fp8 e4m3 per-tensor", ew.fake_quant_fp8, ref.fake_quant_fp8, (x, xf_abs_max, 4)),
        ("fp8 e4m3 per-row", ew.fake_quant_fp8, ref.fake_quant_fp8, (x, per_row, 4)),
        ("int8 per-tensor", ew.fake_quant_int, ref.fake_quant_int, (x, xf_abs_max, 8, False, True)),
        ("int8 per-row", ew.fake_quant_int, ref.fake_quant_int, (x, per_row, 8, False, True)),
        ("int8 per-column", ew.fake_quant_int, ref.fake_quant_int, (x, per_col, 8, False, True)),
        (
            "int4 block128 dynamic",
            bw.fake_quant_int_dynamic_block,
            ref.fake_quant_int_dynamic_block,
            (x128, 4, False, True),
        ),
        (
            "fp8 block128 dynamic",
            bw.fake_quant_fp8_dynamic_block,
            ref.fake_quant_fp8_dynamic_block,
            (x128, 4),
        ),
        ("nvfp4 dynamic", bw.fake_quant_nvfp4, ref.fake_quant_nvfp4, (x16, xf_abs_max)),
        ("mxfp8 e4m3", bw.fake_quant_mx, ref.fake_quant_mx, (x32, "e4m3")),
        ("mxfp6 e3m2", bw.fake_quant_mx, ref.fake_quant_mx, (x32, "e3m2")),
        ("mxfp4 e2m1", bw.fake_quant_mx, ref.fake_quant_mx, (x32, "e2m1")),
        ("mxint8", bw.fake_quant_mx, ref.fake_quant_mx, (x32, "int8")),
    ]
    out = [(name, tf, rf, args, 2 * n) for name, tf, rf, args in cases]
    out.append(("ste backward (mask)", ew.ste_backward, ref.ste_backward, (x, g, per_row), 3 * n))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--cols", type=int, default=8192)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument(
        "--compile-budget-s",
        type=float,
        default=240.0,
        help="stop compiling baselines once this much time went into compiling",
    )
    p.add_argument("--only", default="", help="comma-separated substrings of case names")
    p.add_argument("--json", default="", help="also write the rows here")
    a = p.parse_args()

    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; torch {torch.__version__}; triton {triton.__version__}")
    torch.manual_seed(0)
    x = torch.randn(a.rows, a.cols, device="cuda", dtype=torch.bfloat16)
    x.view(-1)[::4099] *= 30.0  # outliers
    g = torch.randn_like(x)
    nbytes = x.numel() * x.element_size()

    y = torch.empty_like(x)
    t_copy = _bench(lambda: y.copy_(x))
    y = torch.empty(0)
    copy_gbs = 2 * nbytes / t_copy / 1e6
    print(
        f"copy (read+write {2 * nbytes / 2**20:.0f} MiB): {t_copy * 1e3:.1f} us, "
        f"{copy_gbs:.0f} GB/s"
    )

    rows = []
    compile_spent = 0.0
    for name, tfn, rfn, args, moved in _cases(x, g):
        if a.only and not any(s in name for s in a.only.split(",")):
            continue
        first = _first_call(lambda tfn=tfn, args=args: tfn(*args))
        t_k = _bench(lambda tfn=tfn, args=args: tfn(*args))
        out_k = tfn(*args)
        out_r = rfn(*args)
        exact = bool(
            torch.equal(out_k.isnan(), out_r.isnan())
            and torch.equal(out_k.nan_to_num(), out_r.nan_to_num())
        )
        del out_k, out_r
        torch.cuda.empty_cache()
        t_e = _bench(lambda rfn=rfn, args=args: rfn(*args), reps=30)
        t_c, c_first, c_exact = float("nan"), float("nan"), None
        if not a.no_compile and compile_spent < a.compile_budget_s:
            try:
                cfn = torch.compile(rfn, dynamic=False)
                c_first = _first_call(lambda cfn=cfn, args=args: cfn(*args))
                compile_spent += c_first
                t_c = _bench(lambda cfn=cfn, args=args: cfn(*args))
                c_exact = bool(torch.equal(cfn(*args).nan_to_num(), rfn(*args).nan_to_num()))
            except Exception as err:  # report and go on: the baseline is optional
                print(f"  torch.compile failed for {name}: {type(err).__name__}: {err}"[:300])
            torch._dynamo.reset()
        torch.cuda.empty_cache()
        gbs = moved / t_k / 1e6
        row = {
            "case": name,
            "triton_us": t_k * 1e3,
            "GB/s": gbs,
            "pct_copy": 100 * gbs / copy_gbs,
            "eager_us": t_e * 1e3,
            "x_eager": t_e / t_k,
            "compile_us": t_c * 1e3,
            "x_compile": t_c / t_k,
            "first_call_s": first,
            "compile_first_s": c_first,
            "exact": exact,
            "compile_exact": c_exact,
        }
        rows.append(row)
        print(
            f"  {name}: {t_k * 1e3:.1f} us {gbs:.0f} GB/s ({row['pct_copy']:.0f}% copy), "
            f"eager {row['x_eager']:.1f}x, compile {row['x_compile']:.2f}x, "
            f"first {first:.2f}s, exact={exact}",
            flush=True,
        )

    print()
    print(f"Fake quant, {a.rows}x{a.cols} bf16 ({nbytes / 2**20:.0f} MiB), {dev}")
    print(f"copy ceiling: {copy_gbs:.0f} GB/s")
    hdr = (
        f"| {'case':<22} | {'us':>7} | {'GB/s':>6} | {'%copy':>5} | {'eager us':>8} | "
        f"{'xEager':>6} | {'compile us':>10} | {'xCompile':>8} | {'1st call s':>10} | exact |"
    )
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r['case']:<22} | {r['triton_us']:7.1f} | {r['GB/s']:6.0f} | "
            f"{r['pct_copy']:5.1f} | {r['eager_us']:8.1f} | {r['x_eager']:6.1f} | "
            f"{r['compile_us']:10.1f} | {r['x_compile']:8.2f} | {r['first_call_s']:10.2f} | "
            f"{'yes' if r['exact'] else 'NO':>5} |"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": dev, "copy_GBps": copy_gbs, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
