"""CPU throughput of fake quantization per format vs a naive eager reference (same run).

The naive references are what one writes first: plain out-of-place torch ops, nearest grid
point by ``argmin`` over all grid values, ``log2``/``ceil`` for MX exponents. Both sides
are checked to agree before timing. Prints a table: ms per call, GB/s (input read + output
write), and speedup = naive / modeloptim.

Usage: python benchmarks/fake_quant.py [--rows 2048 --cols 2048 --dtype float32 --repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from modeloptim.torch.quantization.formats import (
    Blocked,
    FP8Format,
    IntegerFormat,
    MXFormat,
    NVFP4Format,
    PerChannel,
    QuantFormat,
)

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def naive_int(x, amax, bits=8):
    bound = 2 ** (bits - 1) - 1
    scale = torch.div(torch.tensor(float(bound)), amax.float())
    return (torch.clamp(torch.round(x.float() * scale), -bound, bound) / scale).to(x.dtype)


def naive_fp8(x, amax, dt=torch.float8_e4m3fn, fmax=448.0):
    scale = torch.div(torch.tensor(fmax), amax.float())
    return (
        torch.clamp(x.float() * scale, -fmax, fmax).to(dt).float()
        * torch.div(torch.tensor(1.0), scale)
    ).to(x.dtype)


def naive_grid_round(v, grid):
    a = v.abs().unsqueeze(-1).double()
    d = (a - grid.double()).abs()
    # ties to the even code: a tiny penalty on odd codes (float64 keeps it visible)
    d = d + (torch.arange(len(grid)) % 2) * 1e-12
    return torch.sign(v) * grid[d.argmin(-1)]


def naive_nvfp4(x, gamax):
    xb = x.float().reshape(-1, 16)
    scale_2 = torch.div(gamax, torch.tensor(6.0 * 448))
    s = xb.abs().amax(-1, keepdim=True) / (6 * scale_2)
    s = torch.where(s == 0, torch.ones_like(s), s).clamp(2**-9, 448)
    d = s.to(torch.float8_e4m3fn).float() * scale_2
    return (naive_grid_round(xb / d, E2M1) * d).reshape(x.shape).to(x.dtype)


def naive_mxfp4(x):
    xb = x.float().reshape(-1, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    e = torch.ceil(torch.log2(amax / 6.0)).clamp(-127, 127)
    e = torch.where(amax == 0, torch.full_like(e, -127), e)
    p = 2.0**e
    return (naive_grid_round(xb / p, E2M1) * p).reshape(x.shape).to(x.dtype)


E3M2 = torch.tensor(
    sorted(
        {m / 4 * 2.0**-2 for m in range(4)}
        | {(1 + m / 4) * 2.0 ** (e - 3) for e in range(1, 8) for m in range(4)}
    )
)


def naive_mxfp6(x):
    xb = x.float().reshape(-1, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    e = torch.ceil(torch.log2(amax / 28.0)).clamp(-127, 127)
    e = torch.where(amax == 0, torch.full_like(e, -127), e)
    p = 2.0**e
    return (naive_grid_round(xb / p, E3M2) * p).reshape(x.shape).to(x.dtype)


def naive_mxfp8(x):
    xb = x.float().reshape(-1, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    e = torch.ceil(torch.log2(amax / 448.0)).clamp(-127, 127)
    p = 2.0**e
    q = torch.clamp(xb / p, -448, 448).to(torch.float8_e4m3fn).float()
    return (q * p).reshape(x.shape).to(x.dtype)


def naive_int4_block(x, block=128):
    xb = x.float().reshape(-1, block)
    return naive_int(xb, xb.abs().amax(-1, keepdim=True), 4).reshape(x.shape).to(x.dtype)


def bench(fn: Callable[[], torch.Tensor], repeat: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    x = torch.randn(args.rows, args.cols).to(dtype)
    amax_t = x.float().abs().amax()
    amax_c = x.float().abs().amax(dim=1, keepdim=True)
    cases: list[tuple[str, QuantFormat, torch.Tensor | None, Callable[[], torch.Tensor]]] = [
        ("int8 per-tensor", IntegerFormat(8), amax_t, lambda: naive_int(x, amax_t)),
        (
            "int8 per-channel",
            IntegerFormat(8, granularity=PerChannel(0)),
            amax_c,
            lambda: naive_int(x, amax_c),
        ),
        (
            "int4 block128 dyn",
            IntegerFormat(4, granularity=Blocked({-1: 128}, dynamic=True)),
            None,
            lambda: naive_int4_block(x),
        ),
        ("fp8_e4m3 per-tensor", FP8Format(4), amax_t, lambda: naive_fp8(x, amax_t)),
        ("nvfp4 block16", NVFP4Format(), amax_t, lambda: naive_nvfp4(x, amax_t)),
        ("mxfp8 block32", MXFormat("e4m3"), None, lambda: naive_mxfp8(x)),
        ("mxfp6 block32", MXFormat("e3m2"), None, lambda: naive_mxfp6(x)),
        ("mxfp4 block32", MXFormat("e2m1"), None, lambda: naive_mxfp4(x)),
    ]
    nbytes = 2 * x.numel() * x.element_size()
    print(
        f"fake quant, CPU ({torch.get_num_threads()} threads), x={tuple(x.shape)} {args.dtype}, "
        f"best of {args.repeat}"
    )
    print(f"{'format':<22}{'modeloptim ms':>14}{'GB/s':>8}{'naive ms':>11}{'speedup':>9}")
    for name, fmt, amax, naive in cases:
        ours = fmt.fake_quant(x, amax)
        ref = naive()
        mismatch = (ours != ref).float().mean().item()
        t_ours = bench(lambda fmt=fmt, amax=amax: fmt.fake_quant(x, amax), args.repeat)
        t_naive = bench(naive, args.repeat)
        note = "" if mismatch == 0 else f"  ({mismatch:.2e} of elements differ)"
        print(
            f"{name:<22}{t_ours * 1e3:>14.2f}{nbytes / t_ours / 1e9:>8.2f}"
            f"{t_naive * 1e3:>11.2f}{t_naive / t_ours:>8.2f}x{note}"
        )


if __name__ == "__main__":
    main()
