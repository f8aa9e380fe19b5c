"""Compile every Triton kernel variant for sm_90 without a GPU and report build cost and SASS use.

Needs only Triton's bundled ptxas/cuobjdump (no device): per variant it prints the build time,
registers, spills (local memory), and whether global loads/stores are 16-byte vectors, so a
regression in vectorization or a kernel build over the 10 s budget shows before device time.

    python benchmarks/gpu/compile_check.py
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="mo_cc_cache_"))

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from modeloptim.torch.quantization.backends import _gemv_kernels as gk
from modeloptim.torch.quantization.backends import _kernels as bk
from modeloptim.torch.quantization.triton import blockwise as bw
from modeloptim.torch.quantization.triton import elementwise as ew

_BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def _compile(fn, sig: dict, const: dict, aligned: list[str], warps: int) -> dict:
    names = list(sig)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in aligned}
    full = {**{k: "constexpr" for k in const}, **sig}
    t0 = time.perf_counter()
    k = triton.compile(
        ASTSource(fn, full, const, attrs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "enable_fp_fusion": False},
    )
    dt = time.perf_counter() - t0
    ptx = k.asm["ptx"]
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    res = subprocess.run(
        [str(_BIN / "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True
    ).stdout
    os.unlink(f.name)
    line = next((ln for ln in res.splitlines() if "REG:" in ln), "")
    fields = dict(p.split(":") for p in line.split() if ":" in p)
    return {
        "build_s": dt,
        "regs": fields.get("REG", "?"),
        "local": fields.get("LOCAL", "?"),
        "ld.v4": ptx.count("ld.global.v4"),
        "st.v4": ptx.count("st.global.v4"),
        "ld.scalar": ptx.count("ld.global.b16") + ptx.count("ld.global.u16"),
        "div.rn": ptx.count("div.rn"),
    }


def _variants():
    ew_sig = {
        "x_ptr": "*bf16",
        "amax_ptr": "*fp32",
        "out_ptr": "*bf16",
        "R": "i32",
        "L": "i32",
        "C": "i32",
        "BOUND": "fp32",
        "LO": "fp32",
        "HI": "fp32",
    }
    ew_al = ["x_ptr", "amax_ptr", "out_ptr", "R", "L", "C"]
    for mode, name in ((0, "tensor"), (1, "row"), (2, "col")):
        for fmt, emin, mb in ((0, 0, 0), (1, -6, 3)):
            const = {
                "MODE": mode,
                "FMT": fmt,
                "EMIN": emin,
                "MBITS": mb,
                "TINY": 2.0**-24,
                "BF16": False,
                "NATIVE": True,
                "BLOCK_R": 1 if mode != 2 else 8192 // ew.COL_TILE_COLS,
                "BLOCK_L": 8192 if mode != 2 else ew.COL_TILE_COLS,
                "INT64": False,
            }
            yield (
                f"{'int' if fmt == 0 else 'fp8'} per-{name}",
                ew._scaled_fake_quant_kernel,
                ew_sig,
                const,
                ew_al,
                ew.NUM_WARPS,
            )
    ste_sig = {
        "x_ptr": "*bf16",
        "g_ptr": "*bf16",
        "amax_ptr": "*fp32",
        "out_ptr": "*bf16",
        "R": "i32",
        "L": "i32",
        "C": "i32",
    }
    yield (
        "ste backward row",
        ew._ste_backward_kernel,
        ste_sig,
        {"MODE": 1, "BLOCK_R": 1, "BLOCK_L": 8192, "INT64": False},
        ["x_ptr", "g_ptr", "amax_ptr", "out_ptr", "R", "L", "C"],
        ew.NUM_WARPS,
    )
    bw_sig = {
        "x_ptr": "*bf16",
        "gamax_ptr": "*fp32",
        "out_ptr": "*bf16",
        "N": "i32",
        "B": "i32",
        "BOUND": "fp32",
        "LO": "fp32",
        "HI": "fp32",
    }
    bw_al = ["x_ptr", "gamax_ptr", "out_ptr", "N", "B"]
    for name, fmt, b, emin, mb, i8 in (
        ("int4 block128", 0, 128, 0, 0, False),
        ("fp8 block128", 1, 128, -6, 3, False),
        ("nvfp4", 2, 16, 0, 0, False),
        ("mx e4m3", 3, 32, -6, 3, False),
        ("mx e2m1", 3, 32, 0, 1, False),
        ("mx int8", 3, 32, 0, 0, True),
    ):
        const = {
            "FMT": fmt,
            "EMIN": emin,
            "MBITS": mb,
            "MX_INT8": i8,
            "TINY": 2.0**-24,
            "BF16": False,
            "NATIVE": True,
            "BLOCK_N": bw.TILE_ELEMS // b,
            "BLOCK_B": b,
            "INT64": False,
        }
        yield (name, bw._block_fake_quant_kernel, bw_sig, const, bw_al, bw.NUM_WARPS)
    gv_sig = {
        "x_ptr": "*i32",
        "w_ptr": "*u8",
        "s_ptr": "*bf16",
        "gs_ptr": "*fp32",
        "b_ptr": "*bf16",
        "y_ptr": "*bf16",
        "N": "i32",
        "K": "i32",
        "stride_xm": "i32",
        "stride_ym": "i32",
    }
    gv_al = ["x_ptr", "w_ptr", "s_ptr", "y_ptr", "N", "K", "stride_xm", "stride_ym"]
    for wfmt, group in ((0, 128), (1, 16)):
        sig = dict(gv_sig, s_ptr="*bf16" if wfmt == 0 else "*u8")
        const = {
            "GROUP": group,
            "WFMT": wfmt,
            "HAS_BIAS": False,
            "XBF16": True,
            "BLOCK_N": 16,
            "BLOCK_K": 512,
        }
        yield (
            f"w4 gemv {'int4' if wfmt == 0 else 'nvfp4'}",
            gk.w4_gemv_kernel,
            sig,
            const,
            gv_al,
            4,
        )
        gm_sig = dict(sig, M="i32", x_ptr="*bf16")
        gm_sig = {
            k: gm_sig[k]
            for k in [
                "x_ptr",
                "w_ptr",
                "s_ptr",
                "gs_ptr",
                "b_ptr",
                "y_ptr",
                "M",
                "N",
                "K",
                "stride_xm",
                "stride_ym",
            ]
        }
        const = {
            "GROUP": group,
            "WFMT": wfmt,
            "HAS_BIAS": False,
            "IEEE": False,
            "BLOCK_M": 16,
            "BLOCK_N": 64,
            "BLOCK_K": 256,
            "GROUP_M": 8,
        }
        yield (
            f"w4 gemm {'int4' if wfmt == 0 else 'nvfp4'}",
            bk.w4_gemm_kernel,
            gm_sig,
            const,
            [*gv_al, "M"],
            4,
        )
    dq_sig = {
        "w_ptr": "*u8",
        "s_ptr": "*bf16",
        "gs_ptr": "*fp32",
        "out_ptr": "*bf16",
        "N": "i32",
        "K": "i32",
    }
    for wfmt, group, bk_ in ((0, 128, 128), (1, 16, 256)):
        sig = dict(dq_sig, s_ptr="*bf16" if wfmt == 0 else "*u8")
        const = {
            "GROUP": group,
            "WFMT": wfmt,
            "BF16": False,
            "BLOCK_N": 8192 // bk_,
            "BLOCK_K": bk_,
        }
        yield (
            f"w4 dequant {'int4' if wfmt == 0 else 'nvfp4'}",
            bk.w4_dequant_kernel,
            sig,
            const,
            ["w_ptr", "s_ptr", "out_ptr", "N", "K"],
            4,
        )
    aq_sig = {
        "x_ptr": "*bf16",
        "q_ptr": "*u8",
        "amax_ptr": "*fp32",
        "inv_ptr": "*fp32",
        "K": "i32",
        "stride_xm": "i32",
    }
    yield (
        "fp8 act quant row",
        bk.quant_rows_kernel,
        aq_sig,
        {"PER_ROW": True, "OUT_INT8": False, "TINY": 2.0**-24, "NATIVE": True, "BLOCK": 2048},
        ["x_ptr", "q_ptr", "K", "stride_xm"],
        4,
    )


def main() -> None:
    print(f"triton {triton.__version__}, target sm_90")
    print(f"| {'kernel':<20} | build s | regs | local | ld.v4 | st.v4 | scalar ld | div.rn |")
    print(f"|{'-' * 22}|---------|------|-------|-------|-------|-----------|--------|")
    worst = 0.0
    for name, fn, sig, const, aligned, warps in _variants():
        r = _compile(fn, sig, const, aligned, warps)
        worst = max(worst, r["build_s"])
        print(
            f"| {name:<20} | {r['build_s']:7.2f} | {r['regs']:>4} | {r['local']:>5} | "
            f"{r['ld.v4']:5d} | {r['st.v4']:5d} | {r['ld.scalar']:9d} | {r['div.rn']:6d} |",
            flush=True,
        )
    print(f"slowest build: {worst:.2f} s")


if __name__ == "__main__":
    main()
