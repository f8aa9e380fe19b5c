# ruff: noqa: N803  (Triton kernels: constexpr parameters are upper case by convention)
"""Can a Triton kernel stream the W4A16 decode's 33.5 MB at cuBLAS's small-read rate?

Pure streaming probes with no decode work, same shape as the INT4 decode's packed weight
(int32 words ``[8192, 1024]`` = 33.5 MB): each program sums ``BLOCK_N`` rows of words (XOR,
so the compiler keeps every load) over K steps of ``BLOCK_K`` words, the GEMV's structure.
Compared in the same run with cuBLAS's bf16 GEMV on a 4096 x 4096 weight (the same bytes)
and the INT4 GEMV. CUDA-graph timing over 6 copies (more than L2).

    python benchmarks/gpu/stream_probe.py
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from _timing import graph_us  # type: ignore[import-not-found]

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends import w4a16


@triton.jit
def _rows_xor_kernel(w_ptr, y_ptr, N, stride_wn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.int32)
    rows = w_ptr + n.to(tl.int64)[:, None] * stride_wn
    for k0 in range(0, stride_wn, BLOCK_K):
        acc ^= tl.load(rows + (k0 + k)[None, :], mask=(n < N)[:, None], other=0)
    tl.store(y_ptr + n, tl.xor_sum(acc, axis=1), mask=n < N)


def main() -> None:
    """Print one table: case, us, GB/s."""
    copies = 6
    print(
        f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
        f"triton {triton.__version__}"
    )

    def bench(fn, nbytes: int, label: str) -> None:
        t = graph_us(fn, copies, 40)
        print(f"| {label} | {t:.1f} | {nbytes / t / 1e3:.0f} |", flush=True)

    print("| case | us | GB/s |")
    print("| --- | --- | --- |")
    n, kw = 8192, 1024
    words = [
        torch.randint(-(2**31), 2**31 - 1, (n, kw), device="cuda", dtype=torch.int32)
        for _ in range(copies)
    ]
    ys = [torch.empty(n, device="cuda", dtype=torch.int32) for _ in range(copies)]
    nbytes = n * kw * 4
    w4 = [torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    x4 = [torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    bench(lambda i: F.linear(x4[i], w4[i]), nbytes, "cuBLAS bf16 GEMV 4096x4096 (33.5 MB)")
    w8 = [torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    x8 = [torch.randn(1, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    qws = [B.quantize_int4(w, 128) for w in w8]
    bench(lambda i: w4a16.w4a16_linear(x8[i], qws[i], None), nbytes, "INT4 GEMV (default)")
    del w8
    for bn, bk, warps in itertools.product((1, 2, 4, 8, 16), (256, 512, 1024), (4, 8)):
        if bn * bk > 16384:
            continue
        grid = (triton.cdiv(n, bn),)

        def run(i: int, bn: int = bn, bk: int = bk, warps: int = warps, grid=grid) -> None:
            _rows_xor_kernel[grid](words[i], ys[i], n, kw, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps)

        bench(run, nbytes, f"Triton stream {bn} rows x {bk} words, {warps} warps")


if __name__ == "__main__":
    main()
