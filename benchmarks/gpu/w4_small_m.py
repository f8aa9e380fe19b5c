"""W4A16 INT4 for a few activation rows (M = 1-32) on the GPU vs the bf16 ``F.linear``.

For each M: the bf16 GEMM/GEMV on the dense weight (baseline, same run), the default W4A16
path, and for M above ``GEMV_MAX_M`` both the fused tile kernel and the one-pass dequantization
+ cuBLAS. CUDA-graph replay over 6 weight copies (more than L2), so no host launch cost is
counted.

    python benchmarks/gpu/w4_small_m.py [--size 8192]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F
import triton
from _timing import graph_us  # type: ignore[import-not-found]

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends import w4a16

#: fused GEMM tiles tried by --sweep: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
SWEEP = [
    (16, 64, 128, 4, 4),
    (16, 32, 128, 4, 4),
    (16, 128, 128, 4, 3),
    (16, 64, 256, 4, 3),
    (32, 64, 128, 4, 4),
    (32, 128, 128, 4, 3),
    (64, 64, 128, 4, 4),
    (64, 128, 128, 4, 4),
    (64, 128, 64, 4, 4),
    (128, 128, 64, 8, 3),
    (128, 128, 128, 8, 3),
    (128, 256, 64, 8, 3),
    (64, 256, 64, 8, 4),
]


def main() -> None:
    """Print one table per M."""
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--ms", default="1,2,4,8,16,32,64,128,256,1024,2048")
    p.add_argument("--sweep", action="store_true", help="fused GEMM tile sweep per M")
    a = p.parse_args()
    n = k = a.size
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; torch {torch.__version__}; triton {triton.__version__}")
    torch.manual_seed(0)
    copies = 6
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    qws = [B.quantize_int4(w, 128) for w in ws]

    def bench(fn: Any) -> float:
        return graph_us(fn, copies)

    print("| M | case | us | x bf16 | rel err |\n| --- | --- | --- | --- | --- |")
    for m in (int(v) for v in a.ms.split(",")):
        xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        ref = xs[0].double() @ qws[0].dequantize(torch.float64).T
        t_bf16 = bench(lambda i, xs=xs: F.linear(xs[i], ws[i]))
        print(f"| {m} | bf16 F.linear | {t_bf16:.1f} | 1.00 | |", flush=True)

        def row(
            label: str, xs: list = xs, ref: torch.Tensor = ref, t_bf16: float = t_bf16, m: int = m
        ) -> None:
            t = bench(lambda i: w4a16.w4a16_linear(xs[i], qws[i], None))
            y = w4a16.w4a16_linear(xs[0], qws[0], None)
            err = ((y.double() - ref).norm() / ref.norm()).item()
            print(f"| {m} | {label} | {t:.1f} | {t_bf16 / t:.2f} | {err:.1e} |", flush=True)

        row("default")
        if m == 1:
            continue
        fused0, max0, gemv_max0 = w4a16.FUSED_GEMM, w4a16.FUSED_GEMM_MAX_M, w4a16.GEMV_MAX_M
        w4a16.FUSED_GEMM, w4a16.GEMV_MAX_M = True, 0
        row(f"fused tile kernel {w4a16._gemm_tile(m)}")
        if a.sweep:
            tiles0 = w4a16.GEMM_TILES
            for tile in SWEEP:
                if tile[0] > 2 * max(m, 16) or (m >= 256 and tile[0] < 64):
                    continue
                w4a16.GEMM_TILES = ((1 << 62, tile),)
                try:
                    row(f"fused tile kernel {tile}")
                except Exception as e:  # a tile that does not fit: report, go on
                    print(f"| {m} | fused {tile} failed: {type(e).__name__} | | | |", flush=True)
            w4a16.GEMM_TILES = tiles0
        w4a16.GEMV_MAX_M = 16
        w4a16.FUSED_GEMM, w4a16.FUSED_GEMM_MAX_M = False, 0
        if m <= 16:
            row("per-row GEMV")
        w4a16.GEMV_MAX_M = 0
        row("dequantize + cuBLAS")
        w4a16.FUSED_GEMM, w4a16.FUSED_GEMM_MAX_M, w4a16.GEMV_MAX_M = fused0, max0, gemv_max0


if __name__ == "__main__":
    main()
