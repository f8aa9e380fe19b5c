"""W4A16 decode (M=1) on the GPU: INT4 GEMV kernel variants vs the bf16 GEMV, one table.

Times ``F.linear`` on the bf16 weight (baseline, same run) and each INT4 GEMV variant:
the byte-wise kernel, the word-wise kernel (tile sweep), the word kernel with manual
prefetch (next step's loads issued before decoding the current step) and/or split-K, and
the tensor-core kernel (M padded to 16, pipelined weight loads), and the interleaved-layout
kernel (activations loaded in the weights' register layout). Every time is a CUDA-graph
replay over 6 weight copies (6 x 32 MiB > L2), so no host launch cost is counted. Prints
the ratio to bf16, GB/s on the packed bytes and the error against float64.

    python benchmarks/gpu/w4_gemv_sweep.py [--size 8192] [--json F] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

import torch
import torch.nn.functional as F
import triton
from _timing import graph_us  # type: ignore[import-not-found]

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends import w4a16

#: Module settings every variant starts from (the word kernel's defaults).
BASE: dict[str, Any] = {
    "GEMV_WORDS": True,
    "GEMV_DOT": False,
    "GEMV_ILV": False,
    "GEMV_ILV_PREFETCH": False,
    "GEMV_ILV_SCALE2D": False,
    "GEMV_WORDS_PREFETCH": False,
    "GEMV_WORDS_SPLIT_K": 1,
    "GEMV_WORDS_BLOCK_N": w4a16.GEMV_WORDS_BLOCK_N,
    "GEMV_WORDS_BLOCK_K": w4a16.GEMV_WORDS_BLOCK_K,
    "GEMV_WORDS_WARPS": w4a16.GEMV_WORDS_WARPS,
    "GEMV_WORDS_STAGES": 1,
    "GEMV_WORDS_PIPE": 1,
    "GEMV_ILV_PIPE": 1,
    "GEMV_WORDS_LEAN": w4a16.GEMV_WORDS_LEAN,
    "GEMV_WORDS_X2D": False,
}


def variants(families: set[str], quick: bool) -> list[tuple[str, dict[str, Any]]]:
    """(label, module settings) of every variant to time, for the kernel families asked."""
    out: list[tuple[str, dict[str, Any]]] = [("words default", {})]
    if "byte" in families:
        out.append(("byte kernel", {"GEMV_WORDS": False}))
    tiles = [(16, 1024, 4), (8, 1024, 4), (16, 512, 4), (32, 512, 8), (16, 2048, 8)]
    if quick:
        tiles = tiles[:2]
    for bn, bk, wp in tiles if "words" in families else []:
        tile = {"GEMV_WORDS_BLOCK_N": bn, "GEMV_WORDS_BLOCK_K": bk, "GEMV_WORDS_WARPS": wp}
        out.append((f"words prefetch {bn}x{bk} w{wp}", {**tile, "GEMV_WORDS_PREFETCH": True}))
        for split in (2, 4, 8):
            for pf in (False, True):
                label = f"words split{split}{' prefetch' if pf else ''} {bn}x{bk} w{wp}"
                out.append(
                    (label, {**tile, "GEMV_WORDS_SPLIT_K": split, "GEMV_WORDS_PREFETCH": pf})
                )
    if "ilv" in families:
        space = itertools.product(
            (4, 8, 16), (2048, 4096, 8192), (4, 8), ((False, False), (False, True), (True, True))
        )
        for bn, bk, wp, (pf, s2) in space:
            if quick and (bn, wp) != (8, 8):
                continue
            flags = (" prefetch" if pf else "") + (" scale2d" if s2 else "")
            out.append(
                (
                    f"interleaved{flags} {bn}x{bk} w{wp}",
                    {
                        "GEMV_ILV": True,
                        "GEMV_ILV_BLOCK_N": bn,
                        "GEMV_ILV_BLOCK_K": bk,
                        "GEMV_ILV_WARPS": wp,
                        "GEMV_ILV_PREFETCH": pf,
                        "GEMV_ILV_SCALE2D": s2,
                    },
                )
            )
    if "pipe" in families:  # loops software-pipelined through shared memory (tl.range stages)
        for (bn, bk, wp), pipe in itertools.product(
            ((16, 1024, 4), (8, 1024, 4), (8, 512, 4), (16, 512, 8), (32, 512, 8), (4, 1024, 4)),
            (2, 3, 4),
        ):
            tile = {"GEMV_WORDS_BLOCK_N": bn, "GEMV_WORDS_BLOCK_K": bk, "GEMV_WORDS_WARPS": wp}
            out.append((f"words pipe{pipe} {bn}x{bk} w{wp}", {**tile, "GEMV_WORDS_PIPE": pipe}))
        for (bn, bk, wp), pipe in itertools.product(
            ((4, 1024, 4), (4, 2048, 4), (8, 1024, 4), (2, 1024, 2), (4, 512, 2), (8, 2048, 8)),
            (2, 3, 4),
        ):
            ilv = {"GEMV_ILV": True, "GEMV_ILV_BLOCK_N": bn, "GEMV_ILV_BLOCK_K": bk}
            ilv |= {"GEMV_ILV_WARPS": wp, "GEMV_ILV_PIPE": pipe}
            out.append((f"interleaved pipe{pipe} {bn}x{bk} w{wp}", ilv))
    if "lean" in families:  # _words_step_lean: about 1/3 fewer instructions per weight pair
        tiles = [
            (16, 1024, 4),
            (16, 2048, 4),
            (16, 4096, 4),
            (32, 2048, 8),
            (8, 2048, 2),
            (16, 2048, 2),
            (32, 2048, 4),
            (8, 4096, 4),
            (16, 8192, 4),
        ]
        for bn, bk, wp in tiles:
            tile = {"GEMV_WORDS_BLOCK_N": bn, "GEMV_WORDS_BLOCK_K": bk, "GEMV_WORDS_WARPS": wp}
            out.append((f"words lean {bn}x{bk} w{wp}", {**tile, "GEMV_WORDS_LEAN": True}))
        lean = {"GEMV_WORDS_LEAN": True}
        out.append(("words lean default prefetch", {**lean, "GEMV_WORDS_PREFETCH": True}))
        out.append(("words lean default split2", {**lean, "GEMV_WORDS_SPLIT_K": 2}))
        out.append(("words lean default (again)", lean))
        out.append(
            ("words old decode 16x1024 w4", {"GEMV_WORDS_LEAN": False, "GEMV_WORDS_BLOCK_K": 1024})
        )
    dots = itertools.product((32, 64, 128), (128, 256, 512), ((4, 4), (8, 3), (4, 2)))
    for bn, bk, (wp, st) in dots if "dot" in families else []:
        if quick and (wp, st) != (4, 4):
            continue
        out.append(
            (
                f"tensor cores {bn}x{bk} w{wp} s{st}",
                {
                    "GEMV_DOT": True,
                    "GEMV_DOT_BLOCK_N": bn,
                    "GEMV_DOT_BLOCK_K": bk,
                    "GEMV_DOT_WARPS": wp,
                    "GEMV_DOT_STAGES": st,
                },
            )
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--json", default="")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--families", default="byte,ilv", help="of byte, words, ilv, dot, pipe, lean")
    p.add_argument("--rep-ms", type=int, default=40)
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
    defaults = {key: getattr(w4a16, key) for key in {*BASE, "GEMV_DOT_BLOCK_N", "GEMV_ILV_BLOCK_N"}}

    def bench(fn: Any) -> float:
        return graph_us(fn, copies, a.rep_ms)

    def rel(y: torch.Tensor) -> float:
        return ((y.double() - ref).norm() / ref.norm()).item()

    t_bf16 = bench(lambda i: F.linear(xs[i], ws[i]))
    rows: list[dict[str, Any]] = []
    for label, settings in variants(set(a.families.split(",")), a.quick):
        for key, value in {**BASE, **settings}.items():
            setattr(w4a16, key, value)
        try:
            t = bench(lambda i: w4a16.w4a16_linear(xs[i], qws[i], None))
            err = rel(w4a16.w4a16_linear(xs[0], qws[0], None))
        except Exception as e:  # a config that does not compile or run: report, go on
            print(f"  {label} failed: {type(e).__name__}: {str(e)[:160]}", flush=True)
            continue
        rows.append({"case": label, "us": t, "x_bf16": t_bf16 / t, "err": err})
        print(f"  {label}: {t:.1f} us ({t_bf16 / t:.2f}x bf16) err {err:.1e}", flush=True)
    for key, value in defaults.items():
        setattr(w4a16, key, value)
    rows.sort(key=lambda r: r["us"])
    print(f"\nW4A16 decode 1x{k} @ {n}x{k} INT4 g128, {dev}; packed bytes {moved / 1e6:.1f} MB")
    print(
        f"bf16 GEMV (F.linear, graph-timed): {t_bf16:.1f} us; target 2.5x = {t_bf16 / 2.5:.1f} us"
    )
    print("| case | us | GB/s | x bf16 | rel err |\n| --- | --- | --- | --- | --- |")
    for r in rows[:12]:
        gbs = moved / r["us"] / 1e3
        print(f"| {r['case']} | {r['us']:.1f} | {gbs:.0f} | {r['x_bf16']:.2f} | {r['err']:.1e} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": dev, "bf16_us": t_bf16, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
