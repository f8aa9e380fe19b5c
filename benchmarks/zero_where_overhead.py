"""Eager CPU cost of the ``amax <= 2**-24`` rule: ``zero_where`` vs the inline check (baseline).

``zero_where`` (formats/base.py) keeps eager mode's ``mask.any()`` skip and only selects
unconditionally under ``torch.compile``. This times INT8 per-channel and FP8 per-tensor fake
quantization in three variants, interleaved in one process (best of N):

- ``inline``: the former code, ``out.masked_fill_(tiny, 0) if tiny.any() else out`` (baseline);
- ``zero_where``: the current code;
- ``always``: an unconditional ``masked_fill_`` (branch-free in eager too; the rejected option).

Usage: python benchmarks/zero_where_overhead.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from modeloptim.torch.quantization.formats import FP8Format, IntegerFormat, PerChannel
from modeloptim.torch.quantization.formats.base import true_div, zero_where

Fill = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _inline(out: torch.Tensor, tiny: torch.Tensor) -> torch.Tensor:
    return out.masked_fill_(tiny, 0.0) if tiny.any() else out


def _always(out: torch.Tensor, tiny: torch.Tensor) -> torch.Tensor:
    return out.masked_fill_(tiny, 0.0)


def _int8(fmt: IntegerFormat, fill: Fill) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def run(v: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        scale, tiny = fmt._scale(amax)
        return fill(torch.round(v * scale).clamp_(fmt.lo, fmt.hi).div_(scale), tiny)

    return run


def _fp8(fmt: FP8Format, fill: Fill) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def run(v: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        scale, tiny = fmt._scale(amax)
        return fill(fmt._codes(v, scale).float().mul_(true_div(1.0, scale)), tiny)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.manual_seed(0)
    fills: dict[str, Fill] = {"inline": _inline, "zero_where": zero_where, "always": _always}
    print(f"CPU ({torch.get_num_threads()} threads), best of {args.rounds} interleaved rounds")
    print(f"{'case':<30}{'inline us':>11}{'zero_where':>12}{'ratio':>7}{'always':>10}{'ratio':>7}")
    for shape, calls in (((16, 576), 400), ((512, 576), 40), ((2048, 2048), 3)):
        x = torch.randn(*shape)
        int8 = IntegerFormat(8, granularity=PerChannel(0))
        fp8 = FP8Format(4)
        cases = {
            "int8 per-channel": (
                {k: _int8(int8, f) for k, f in fills.items()},
                x.abs().amax(1, keepdim=True),
            ),
            "fp8 per-tensor": ({k: _fp8(fp8, f) for k, f in fills.items()}, x.abs().amax()),
        }
        for label, (fns, amax) in cases.items():
            want = fns["inline"](x, amax)
            assert all(torch.equal(fn(x, amax), want) for fn in fns.values())
            best = dict.fromkeys(fns, float("inf"))
            for r in range(args.rounds):
                order = list(fns) if r % 2 else list(reversed(fns))
                for k in order:
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        fns[k](x, amax)
                    best[k] = min(best[k], (time.perf_counter() - t0) / calls * 1e6)
            base = best["inline"]
            print(
                f"{label + ' ' + 'x'.join(map(str, shape)):<30}{base:>11.1f}"
                f"{best['zero_where']:>12.1f}{best['zero_where'] / base:>7.2f}"
                f"{best['always']:>10.1f}{best['always'] / base:>7.2f}"
            )


if __name__ == "__main__":
    main()
