"""CPU time of weight calibration (``mtq.quantize`` of weight-only presets), before/after.

Calibrators check that their input is finite on the reduced amax (a max reduction carries
NaN/Inf through) instead of running ``isfinite`` over every weight. The baseline, measured in
the same run, restores the old full-tensor check by wrapping ``Calibrator._check``; both sides
must produce identical amax values before they are timed. Prints a table: seconds of
``mtq.quantize`` (min over ``--repeat``), baseline seconds and the speedup.

    python benchmarks/weight_calibration.py                     # 8 x Linear(2048, 2048)
    python benchmarks/weight_calibration.py --model smollm2     # built-in SmolLM2-135M
    python benchmarks/weight_calibration.py --threads 1 --clock cpu  # on a busy machine
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.calib.base import Calibrator, check_finite
from modeloptim.torch.quantization.conversion import named_tensor_quantizers

PRESETS = ("INT8_WEIGHT_ONLY_CFG", "INT4_BLOCKWISE_WEIGHT_ONLY_CFG")


@contextmanager
def full_tensor_check() -> Iterator[None]:
    """The previous behaviour: ``isfinite`` over the whole input of every ``collect``."""
    original = Calibrator._check

    def checked(self: Calibrator, x: torch.Tensor) -> torch.Tensor:
        out = original(self, x)
        check_finite(x, type(self).__name__)
        return out

    Calibrator._check = checked  # type: ignore[method-assign]
    try:
        yield
    finally:
        Calibrator._check = original  # type: ignore[method-assign]


def build(kind: str) -> tuple[nn.Module, Callable[[nn.Module], None]]:
    """The model and a one-batch forward loop."""
    if kind == "smollm2":
        from modeloptim.torch.utils.default_model import load_default_model

        model, _ = load_default_model()
        ids = torch.randint(0, 1000, (1, 16))
        return model, lambda m: m(input_ids=ids)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(8)])
    x = torch.randn(1, 2048)
    return model, lambda m: m(x)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def quantize_once(
    model: nn.Module, preset: str, loop: Callable[[nn.Module], None], clock: str = "wall"
) -> tuple[float, dict[str, torch.Tensor]]:
    """Seconds of one ``mtq.quantize`` on a copy, and the amax of every quantizer."""
    m = copy.deepcopy(model)
    tick = CLOCKS[clock]
    start = tick()
    mtq.quantize(m, getattr(mtq, preset), loop)
    seconds = tick() - start
    amax = {n: q.amax.clone() for n, q in named_tensor_quantizers(m) if q.amax is not None}
    return seconds, amax


def main() -> None:
    """Time every preset with the reduced check and with the full-tensor baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["linear", "smollm2"], default="linear")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or process CPU time (steadier on a shared machine)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, loop = build(args.model)
    rows: list[tuple[Any, ...]] = []
    for preset in PRESETS:
        _, want = quantize_once(model, preset, loop)  # warm-up and reference amax
        with full_tensor_check():
            _, base_amax = quantize_once(model, preset, loop)
        assert want.keys() == base_amax.keys()
        assert all(torch.equal(want[k], base_amax[k]) for k in want), "amax differs"
        new, old = [], []
        for _ in range(args.repeat):  # interleaved, so machine load hits both alike
            new.append(quantize_once(model, preset, loop, args.clock)[0])
            with full_tensor_check():
                old.append(quantize_once(model, preset, loop, args.clock)[0])
        rows.append((preset, min(new), min(old), min(old) / min(new)))
    print(
        f"\nmtq.quantize on {args.model}, {torch.get_num_threads()} threads, "
        f"{args.clock} clock, min of {args.repeat}"
    )
    print(f"{'preset':<34}{'reduced check s':>16}{'full check s':>14}{'speedup':>9}")
    for preset, new_s, old_s, ratio in rows:
        print(f"{preset:<34}{new_s:>16.3f}{old_s:>14.3f}{ratio:>8.2f}x")


if __name__ == "__main__":
    main()
