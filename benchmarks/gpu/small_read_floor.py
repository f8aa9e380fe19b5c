"""How fast can an H100 stream the W4A16 decode's bytes? Reads of ~34 MB vs the GEMVs.

The INT4 decode (M=1, 8192 x 8192, group 128) reads 33.6 MB (codes + scales). This times, in
CUDA graphs over 6 copies (more than L2), plain reads of the same size by cuBLAS and by
PyTorch's reduction (no decode work at all), next to the bf16 GEMV the issue compares with,
to show the floor a 33.6 MB read has on the machine.

    python benchmarks/gpu/small_read_floor.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
from _timing import graph_us  # type: ignore[import-not-found]

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends import w4a16


def main() -> None:
    """Print one table: case, us, GB/s."""
    copies = 6
    print(
        f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
        f"triton {triton.__version__}"
    )

    def bench(fn, nbytes: int, label: str) -> None:
        t = graph_us(fn, copies, 60)
        print(f"| {label} | {t:.1f} | {nbytes / t / 1e3:.0f} |")

    print("| case | us | GB/s |")
    print("| --- | --- | --- |")
    w8 = [torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    x8 = [torch.randn(1, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    bench(lambda i: F.linear(x8[i], w8[i]), 8192 * 8192 * 2, "bf16 GEMV 8192x8192 (134 MB)")
    w4 = [torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    x4 = [torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    bench(lambda i: F.linear(x4[i], w4[i]), 4096 * 4096 * 2, "bf16 GEMV 4096x4096 (33.5 MB)")
    flat = [w.view(-1)[: 4096 * 4096] for w in w8]
    bench(lambda i: flat[i].sum(), 4096 * 4096 * 2, "torch sum of 33.5 MB bf16")
    qws = [B.quantize_int4(w, 128) for w in w8]
    nb = qws[0].data.numel() + qws[0].scale.numel() * 2
    bench(lambda i: w4a16.w4a16_linear(x8[i], qws[i], None), nb, "INT4 GEMV (default words)")


if __name__ == "__main__":
    main()
