"""Fake-quantized MLP on CPU: ``torch.compile(fullgraph=True)`` vs eager (baseline), same run.

For each format the model (Linear layers with weight and input quantizers, calibrated with
``max``) is compiled with inductor and ``fullgraph=True`` (any graph break raises), checked
bit-exact against eager, then timed. Prints compile seconds, eager and compiled ms per
forward and the speedup (eager / compiled).

Usage: python benchmarks/compile_fake_quant.py [--width 1024 --batch 64 --repeat 20] [FORMAT...]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import modeloptim.torch.quantization as mtq

FORMATS: dict[str, dict[str, Any]] = {
    "fp8": {"num_bits": (4, 3), "axis": None},
    "int8_channel": {"num_bits": 8, "axis": 0},
    "int4_block_dynamic": {"num_bits": 4, "block_sizes": {-1: 128, "type": "dynamic"}},
    "nvfp4": {
        "num_bits": (2, 1),
        "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)},
    },
    "mxfp8": {
        "num_bits": (4, 3),
        "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)},
    },
}


def _model(width: int, fmt: dict[str, Any], x: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width)
    ).eval()
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*weight_quantizer", "cfg": fmt},
            {"quantizer_name": "*input_quantizer", "cfg": fmt},
        ],
        "algorithm": "max",
    }
    return mtq.quantize(model, cfg, lambda m: m(x))


def _ms(fn: Any, x: torch.Tensor, repeat: int) -> float:
    fn(x)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn(x)
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("formats", nargs="*", default=list(FORMATS))
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    x = torch.randn(args.batch, args.width)
    print(f"CPU ({torch.get_num_threads()} threads), x={tuple(x.shape)}, 2 quantized Linear")
    print(f"{'format':<20}{'compile s':>10}{'eager ms':>10}{'compiled ms':>13}{'speedup':>9}")
    for name in args.formats:
        model = _model(args.width, FORMATS[name], x)
        torch._dynamo.reset()
        with torch.no_grad():
            t0 = time.perf_counter()
            compiled = torch.compile(model, fullgraph=True)
            out = compiled(x)
            t_compile = time.perf_counter() - t0
            if not torch.equal(out, model(x)):
                raise SystemExit(f"{name}: compiled output differs from eager")
            eager = _ms(model, x, args.repeat)
            comp = _ms(compiled, x, args.repeat)
        print(f"{name:<20}{t_compile:>10.1f}{eager:>10.2f}{comp:>13.2f}{eager / comp:>8.2f}x")


if __name__ == "__main__":
    main()
