"""``auto_quantize``: per-layer format search under an effective-bits budget.

Given candidate formats (preset dicts or names), every quantizable linear layer gets one
format, or none (kept in 16 bit), so that the weights' average bits per element (scale
overhead included, e.g. NVFP4 4.5, FP8 8, unquantized 16) stays within
``constraints["effective_bits"]`` and the estimated loss increase is minimal:

1. for each format, a copy of the model is quantized with it (max calibration over
   ``num_calib_steps`` batches; the formats' own algorithms are not used for the search);
2. sensitivity: over ``num_score_steps`` batches the float model runs forward and backward
   through ``loss_func``; for each layer ``l`` and format ``f`` the score adds
   ``sum((y_f - y)^2 * g^2)`` where ``y``/``g`` are the layer's float output and the loss
   gradient w.r.t. it, and ``y_f`` the format-``f`` layer applied to the same input (the
   diagonal-Fisher estimate of the loss increase, as ModelOpt's gradient search);
3. layers that read the same tensor (q/k/v, gate/up; found by
   :func:`modeloptim.torch.trace.shared_input_groups`)
   form one unit that takes one format;
4. a multiple-choice knapsack over the units is solved by dynamic programming on a fine
   cost grid (costs rounded up, so the budget always holds);
5. the model is quantized in place with the chosen per-layer formats and max-calibrated.

Returns ``(model, search_state)``; ``search_state["best"]["recipe"]`` maps each layer to its
format name and ``search_state["candidate_stats"]`` holds every unit's scores and costs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["NO_QUANT", "auto_quantize", "solve_multiple_choice_knapsack"]

#: Name of the "keep this layer unquantized" choice (counted as 16 bits per weight).
NO_QUANT = "NONE"
_NO_QUANT_BITS = 16.0


def solve_multiple_choice_knapsack(
    scores: Sequence[Sequence[float]],
    costs: Sequence[Sequence[float]],
    budget: float,
    resolution: int = 4000,
) -> list[int]:
    """Pick one option per unit minimizing the summed score with summed cost <= budget.

    Dynamic programming over a cost grid of ``resolution`` steps of ``budget / resolution``
    (costs rounded to the nearest step; exactly optimal when costs are multiples of the step).
    If rounding let the real total exceed the budget, the options that save the most cost per
    unit of score are taken down until it fits, so the budget always holds.

    Args:
        scores: per unit, the score of each option.
        costs: per unit, the cost of each option (>= 0).
        budget: total cost allowed.
        resolution: grid steps.

    Returns:
        The chosen option index per unit.

    Raises:
        ValueError: even the cheapest options exceed the budget.
    """
    if len(scores) != len(costs):
        raise ValueError("scores/costs: expected one list per unit for both")
    if budget <= 0:
        raise ValueError(f"budget: expected a positive number, got {budget}")
    cheapest = sum(min(cs) for cs in costs)
    if cheapest > budget * (1 + 1e-9):
        raise ValueError(
            f"budget: the cheapest choice for every layer already needs {cheapest:.6g} > "
            f"{budget:.6g}"
        )
    step = budget / resolution
    icosts = [[round(c / step) for c in cs] for cs in costs]
    inf = float("inf")
    best = torch.full((resolution + 1,), inf, dtype=torch.float64)
    best[0] = 0.0
    choice: list[torch.Tensor] = []
    for sc, ic in zip(scores, icosts, strict=True):
        new = torch.full_like(best, inf)
        arg = torch.full((resolution + 1,), -1, dtype=torch.long)
        for j, (s, c) in enumerate(zip(sc, ic, strict=True)):
            if c > resolution:
                continue
            cand = torch.full_like(best, inf)
            cand[c:] = best[: resolution + 1 - c] + s
            better = cand < new
            new = torch.where(better, cand, new)
            arg = torch.where(better, torch.full_like(arg, j), arg)
        best = new
        choice.append(arg)
    pos = int(torch.argmin(best))
    if not math.isfinite(float(best[pos])):  # rounding made the grid infeasible
        picks = [min(range(len(cs)), key=cs.__getitem__) for cs in costs]
    else:
        picks = []
        for unit in reversed(range(len(scores))):
            j = int(choice[unit][pos])
            picks.append(j)
            pos -= icosts[unit][j]
        picks = picks[::-1]
    return _repair(picks, scores, costs, budget)


def _repair(
    picks: list[int],
    scores: Sequence[Sequence[float]],
    costs: Sequence[Sequence[float]],
    budget: float,
) -> list[int]:
    """Move units to cheaper options (least score increase per cost saved) until in budget."""
    total = sum(costs[u][j] for u, j in enumerate(picks))
    while total > budget * (1 + 1e-12):
        best: tuple[float, int, int] | None = None
        for u, j in enumerate(picks):
            for k, c in enumerate(costs[u]):
                saved = costs[u][j] - c
                if saved > 0:
                    rate = (scores[u][k] - scores[u][j]) / saved
                    if best is None or rate < best[0]:
                        best = (rate, u, k)
        if best is None:
            break
        _, u, k = best
        total -= costs[u][picks[u]] - costs[u][k]
        picks[u] = k
    return picks


def _parse_formats(formats: Any) -> list[tuple[str, dict[str, Any]]]:
    from .config.presets import PRESETS
    from .config.quantize import QuantizeConfig

    if not isinstance(formats, (list, tuple)) or not formats:
        raise ValueError(
            "quantization_formats: expected a non-empty list of preset dicts or preset names"
        )
    out = []
    for i, f in enumerate(formats):
        if isinstance(f, str):
            if f not in PRESETS:
                raise ValueError(f"quantization_formats[{i}]: unknown preset name {f!r}")
            name, cfg = f, copy.deepcopy(PRESETS[f])
        elif isinstance(f, dict):
            name = next((n for n, p in PRESETS.items() if p == f), f"format{i}")
            cfg = copy.deepcopy(f)
        else:
            raise ValueError(
                f"quantization_formats[{i}]: expected a preset dict or name, got {type(f).__name__}"
            )
        try:
            QuantizeConfig.parse(cfg)
        except ValueError as err:
            raise ValueError(f"quantization_formats[{i}]: {err}") from None
        cfg["algorithm"] = "max"
        out.append((name, cfg))
    return out


def _check_args(
    model: Any, constraints: Any, data_loader: Any, forward_step: Any, loss_func: Any
) -> float:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(constraints, dict) or set(constraints) != {"effective_bits"}:
        raise ValueError(f"constraints: expected {{'effective_bits': float}}, got {constraints!r}")
    bits = constraints["effective_bits"]
    if not isinstance(bits, (int, float)) or not 0 < bits <= _NO_QUANT_BITS:
        raise ValueError(f"constraints['effective_bits']: expected 0 < bits <= 16, got {bits!r}")
    if not isinstance(data_loader, Iterable):
        raise TypeError("data_loader: expected an iterable of batches")
    for name, fn in (("forward_step", forward_step), ("loss_func", loss_func)):
        if not callable(fn):
            raise TypeError(f"{name}: expected a callable, got {type(fn).__name__}")
    from .plugins.hf_moe import is_hf_experts

    moe = [n for n, m in model.named_modules() if is_hf_experts(m)]
    if moe:  # its per-expert layers exist only after conversion: the search would skip them
        raise ValueError(
            f"model: 3-D MoE experts ({moe[0]!r}, ...) are not searched by auto_quantize yet; "
            "quantize such models with mtq.quantize"
        )
    return float(bits)


def _batches(data_loader: Iterable[Any], n: int) -> list[Any]:
    out: list[Any] = []
    for b in data_loader:
        if len(out) >= n:
            break
        out.append(b)
    if not out:
        raise ValueError("data_loader: yielded no batch")
    return out


def _weight_bits(layer: nn.Module) -> float:
    from .algorithms.quant_utils import leaf_quantizers

    qs = [q for q in leaf_quantizers(layer.weight_quantizer) if q.is_enabled]
    return float(qs[0].format.bits_per_element) if qs else _NO_QUANT_BITS


def _layer_attrs(layer: nn.Module, name: str) -> list[dict[str, Any]]:
    """quant_cfg entries reproducing ``layer``'s quantizers under their full names."""
    from .algorithms.quant_utils import leaf_quantizers

    entries = []
    for attr in ("weight_quantizer", "input_quantizer", "output_quantizer"):
        q = getattr(layer, attr, None)
        leaves = leaf_quantizers(q)
        if not leaves:
            continue
        cfgs = [leaf.quant_attribute_cfg.model_dump() for leaf in leaves]
        entries.append(
            {
                "quantizer_name": f"{name}.{attr}",
                "cfg": cfgs if len(cfgs) > 1 else cfgs[0],
                "enable": any(leaf.is_enabled for leaf in leaves),
            }
        )
    return entries


def auto_quantize(
    model: nn.Module,
    constraints: dict[str, float],
    quantization_formats: Sequence[dict[str, Any] | str],
    data_loader: Iterable[Any],
    forward_step: Callable[[nn.Module, Any], Any],
    loss_func: Callable[[Any, Any], torch.Tensor],
    num_calib_steps: int = 512,
    num_score_steps: int = 128,
    verbose: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Quantize ``model`` in place with the best per-layer formats under a bits budget.

    Args:
        model: the float model.
        constraints: ``{"effective_bits": b}`` (average weight bits, scale overhead included).
        quantization_formats: candidate formats (preset dicts like ``mtq.NVFP4_DEFAULT_CFG``
            or preset names); "no quantization" is always a candidate.
        data_loader: iterable of batches (for calibration and scoring).
        forward_step: ``forward_step(model, batch) -> output``.
        loss_func: ``loss_func(output, batch) -> scalar tensor``.
        num_calib_steps: batches for max calibration.
        num_score_steps: batches for the sensitivity scores.
        verbose: print the chosen recipe as a table.

    Returns:
        ``(model, search_state)`` (see the module docstring).
    """
    from modeloptim.torch.trace.shared_inputs import shared_input_groups

    from .algorithms.quant_utils import quant_linear_layers
    from .algorithms.sharing import get_weight_2d
    from .model_quant import quantize

    bits = _check_args(model, constraints, data_loader, forward_step, loss_func)
    formats = _parse_formats(quantization_formats)
    if num_calib_steps < 1 or num_score_steps < 1:
        raise ValueError("num_calib_steps/num_score_steps: expected positive integers")
    calib = _batches(data_loader, num_calib_steps)
    score_batches = _batches(data_loader, num_score_steps)

    def calib_loop(m: nn.Module) -> None:
        for b in calib:
            forward_step(m, b)

    # 1. one quantized copy per format
    variants: list[dict[str, nn.Module]] = []
    for _name, cfg in tqdm(formats, desc="auto_quantize: calibrate formats", leave=False):
        m = quantize(copy.deepcopy(model), cfg, calib_loop)
        variants.append(quant_linear_layers(m))
    names = [n for n in dict(model.named_modules()) if any(n in v for v in variants)]
    if not names:
        raise ValueError("quantization_formats: no format quantizes any linear layer of model")
    modules = dict(model.named_modules())

    # 2. units: layers reading the same tensor share a format
    wanted = set(names)
    groups = shared_input_groups(
        model,
        forward_loop=lambda m: forward_step(m, score_batches[0]),
        predicate=lambda n, _m: n in wanted,
    )
    units = [g.names for g in groups]
    numel = {n: get_weight_2d(modules[n]).numel() for n in names}

    # 3. sensitivity scores
    scores = _score(model, names, variants, score_batches, forward_step, loss_func)

    # 4. knapsack over units: options = formats (if every member has it) + no quantization
    unit_opts: list[list[int]] = []
    unit_scores: list[list[float]] = []
    unit_costs: list[list[float]] = []
    for members in units:
        opts = [f for f in range(len(formats)) if all(n in variants[f] for n in members)]
        opts.append(-1)
        unit_opts.append(opts)
        unit_scores.append([sum(scores[n][f] if f >= 0 else 0.0 for n in members) for f in opts])
        unit_costs.append(
            [
                sum(
                    numel[n] * (_weight_bits(variants[f][n]) if f >= 0 else _NO_QUANT_BITS)
                    for n in members
                )
                for f in opts
            ]
        )
    total = sum(numel[n] for u in units for n in u)
    picks = solve_multiple_choice_knapsack(unit_scores, unit_costs, bits * total)

    # 5. quantize the model with the recipe
    recipe: dict[str, str] = {}
    entries: list[dict[str, Any]] = [{"quantizer_name": "*", "enable": False}]
    for members, opts, p in zip(units, unit_opts, picks, strict=True):
        f = opts[p]
        for n in members:
            recipe[n] = formats[f][0] if f >= 0 else NO_QUANT
            if f >= 0:
                entries.extend(_layer_attrs(variants[f][n], n))
    achieved = sum(c[p] for c, p in zip(unit_costs, picks, strict=True)) / total
    quantize(model, {"quant_cfg": entries, "algorithm": "max"}, calib_loop)
    state = {
        "best": {
            "recipe": recipe,
            "constraints": {"effective_bits": bits},
            "score": sum(s[p] for s, p in zip(unit_scores, picks, strict=True)),
            "is_satisfied": achieved <= bits + 1e-9,
        },
        "effective_bits": achieved,
        "candidate_stats": {
            ",".join(members): {
                "formats": [formats[f][0] if f >= 0 else NO_QUANT for f in opts],
                "scores": sc,
                "costs": [c / sum(numel[n] for n in members) for c in cs],
            }
            for members, opts, sc, cs in zip(units, unit_opts, unit_scores, unit_costs, strict=True)
        },
    }
    if verbose:
        _print_recipe(recipe, achieved)
    return model, state


def _score(
    model: nn.Module,
    names: list[str],
    variants: list[dict[str, nn.Module]],
    batches: list[Any],
    forward_step: Callable[[nn.Module, Any], Any],
    loss_func: Callable[[Any, Any], torch.Tensor],
) -> dict[str, list[float]]:
    modules = dict(model.named_modules())
    scores = {n: [0.0] * len(variants) for n in names}
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for n in names:
        modules[n].weight.requires_grad_(True)

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            x = args[0].detach()
            y = out.detach()

            def on_grad(g: torch.Tensor) -> None:
                g2 = g.detach().float().pow(2)
                with torch.no_grad():
                    for f, v in enumerate(variants):
                        if name in v:
                            d = (v[name](x).float() - y.float()).pow(2)
                            scores[name][f] += float((d * g2).sum())

            if out.requires_grad:
                out.register_hook(on_grad)

        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        for b in tqdm(batches, desc="auto_quantize: score", leave=False):
            loss = loss_func(forward_step(model, b), b)
            loss.backward()
            for n in names:
                modules[n].weight.grad = None
    finally:
        for h in handles:
            h.remove()
        for p, rg in saved.items():
            p.requires_grad_(rg)
        model.train(was_training)
    return scores


def _print_recipe(recipe: dict[str, str], achieved: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"auto_quantize recipe (effective bits {achieved:.2f})")
    table.add_column("layer")
    table.add_column("format")
    for n, f in recipe.items():
        table.add_row(n, f)
    Console().print(table)
