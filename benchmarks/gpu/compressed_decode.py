"""Decode with a compressed (packed INT4 / NVFP4) model vs its bf16 original, on the GPU.

A stack of LLaMA-7B-shaped linear layers (q/k/v/o 4096 x 4096, gate/up 11008 x 4096, down
4096 x 11008) with SiLU between the MLP halves, bf16. Quantized with a weight-only preset,
compressed with ``mtq.compress`` (packed weights, W4A16 kernels on CUDA), and timed for a batch
of 1, 4 and 16 tokens: bf16 model vs compressed model, each forward replayed from a CUDA graph
(no host launch cost), plus weight memory.

    python benchmarks/gpu/compressed_decode.py [--layers 4]
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn
from triton.testing import do_bench_cudagraph

from modeloptim.torch.quantization.compress import compress, weight_nbytes
from modeloptim.torch.quantization.config import presets
from modeloptim.torch.quantization.model_quant import quantize


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(4096, 4096, bias=False) for _ in range(4))
        self.gate = nn.Linear(4096, 11008, bias=False)
        self.up = nn.Linear(4096, 11008, bias=False)
        self.down = nn.Linear(11008, 4096, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.o(self.q(x) + self.k(x) + self.v(x))
        return h + self.down(nn.functional.silu(self.gate(h)) * self.up(h))


def main() -> None:
    """Print one table: preset, tokens, bf16 us, compressed us, speed-up, memory."""
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    a = p.parse_args()
    torch.manual_seed(0)
    base = nn.Sequential(*(_Block() for _ in range(a.layers))).cuda().bfloat16().eval()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    print("| preset | tokens | bf16 us | compressed us | x bf16 | weights MB (bf16 -> packed) |")
    print("| --- | --- | --- | --- | --- | --- |")
    calib = [torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16) * 0.1 for _ in range(2)]
    for name in ("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "W4A16_NVFP4_CFG"):
        model = copy.deepcopy(base)
        quantize(model, copy.deepcopy(getattr(presets, name)), lambda m: [m(x) for x in calib])
        before = weight_nbytes(model)
        compress(model)
        after = weight_nbytes(model)
        for tokens in (1, 4, 16):
            x = torch.randn(tokens, 4096, device="cuda", dtype=torch.bfloat16) * 0.1
            with torch.no_grad():
                t_b = do_bench_cudagraph(lambda x=x: base(x), rep=50) * 1e3
                t_c = do_bench_cudagraph(lambda x=x, m=model: m(x), rep=50) * 1e3
            print(
                f"| {name} | {tokens} | {t_b:.0f} | {t_c:.0f} | {t_b / t_c:.2f} | "
                f"{before / 1e6:.0f} -> {after / 1e6:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
