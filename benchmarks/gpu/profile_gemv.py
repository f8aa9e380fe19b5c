"""Run one W4A16 decode kernel variant a few times, for Nsight Compute (``ncu``) to profile.

    ncu -k regex:gemv --launch-skip 3 --launch-count 1 --section WarpStateStats \
        python benchmarks/gpu/profile_gemv.py --variant words

Variants: ``words`` (the default INT4 decode), ``ilv`` (interleaved layout, 4 x 2048 tile),
``stream`` (the XOR-streaming probe over the same bytes, no decode work).
"""

from __future__ import annotations

import argparse

import torch

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends import w4a16


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="words", choices=["words", "ilv", "stream"])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--calls", type=int, default=6)
    a = p.parse_args()
    n = k = a.size
    torch.manual_seed(0)
    qw = B.quantize_int4(torch.randn(n, k, device="cuda", dtype=torch.bfloat16), 128)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    if a.variant == "ilv":
        w4a16.GEMV_ILV = True
        w4a16.GEMV_ILV_BLOCK_N, w4a16.GEMV_ILV_BLOCK_K, w4a16.GEMV_ILV_WARPS = 4, 2048, 4
    for _ in range(a.calls):
        if a.variant == "stream":
            from stream_probe import _rows_xor_kernel  # type: ignore[import-not-found]

            words = qw.data.view(torch.int32)
            y = torch.empty(n, device="cuda", dtype=torch.int32)
            _rows_xor_kernel[(n // 16,)](words, y, n, words.stride(0), BLOCK_N=16, BLOCK_K=256)
        else:
            w4a16.w4a16_linear(x, qw, None)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
