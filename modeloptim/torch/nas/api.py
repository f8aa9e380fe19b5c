"""``mtn.convert`` / ``mtn.search`` / ``mtn.export`` over per-group width choices."""

from __future__ import annotations

import copy
import fnmatch
import random
from collections.abc import Callable
from typing import Any

from torch import nn
from tqdm import tqdm

from modeloptim.torch.opt.state import ModeloptStateManager, apply_mode
from modeloptim.torch.prune.api import parse_mode, prepare_space
from modeloptim.torch.prune.elastic import activate, export_elastic, space_of
from modeloptim.torch.prune.importance import channel_importance, keep_order
from modeloptim.torch.prune.modes import SPACE_MODES, pending_space
from modeloptim.torch.prune.search import (
    ScoreFunctionError,
    SubnetEvaluator,
    budget_for,
    recalibrate_batchnorm,
)

__all__ = ["choices", "convert", "export", "search"]

Subnet = dict[str, int]


def convert(model: nn.Module, mode: Any, dummy_input: Any = None) -> nn.Module:
    """Convert ``model`` into a search space of elastic layers (in place; returns it).

    Args:
        model: the model.
        mode: ``"autonas"``, ``[("autonas", {"ratios": [...], "group_ratios": {...}})]`` or
            another pruning mode name.
        dummy_input: one forward's input, used to trace the model's channel dependencies.

    Raises:
        ValueError: missing ``dummy_input``, bad mode/config, no searchable groups.
    """
    if dummy_input is None:
        raise ValueError("dummy_input: required to trace the model's channel dependencies")
    name, cfg = parse_mode(mode)
    space = prepare_space(model, name, cfg, dummy_input)
    with pending_space(space):
        return apply_mode(model, (name, cfg))


def choices(model: nn.Module) -> dict[str, list[int]]:
    """Allowed sizes per group of a converted model (from its mode config's ratios)."""
    space = space_of(model)
    rec = next(
        (r for r in reversed(ModeloptStateManager(model).records) if r["mode"] in SPACE_MODES), None
    )
    cfg = rec["config"] if rec else {}
    ratios = cfg.get("ratios", [0.25, 0.5, 0.75, 1.0])
    overrides = cfg.get("group_ratios", {})
    out = {}
    for g in space.groups:
        rs = next((v for pat, v in overrides.items() if fnmatch.fnmatch(g.name, pat)), ratios)
        sizes = {max(1, min(g.size, round(r * g.size / g.granule) * g.granule)) for r in rs}
        out[g.name] = sorted(sizes | {g.size} if 1.0 in rs else sizes)
    return out


def search(
    model: nn.Module,
    constraints: dict[str, Any],
    dummy_input: Any,
    config: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Random + evolutionary search over the choices of a converted model.

    Args:
        model: a model converted with `convert`.
        constraints: ``{"flops": "50%"}`` / ``{"params": N}``.
        dummy_input: input for FLOPs counting.
        config: ``score_func(model) -> float`` (default: prefer the largest subnet that fits),
            ``data_loader`` (BatchNorm re-calibration), ``forward_func``, ``num_candidates``,
            ``seed``.

    Returns:
        ``(model, state)``: the model with the best subnet active (``mtn.export`` makes it
        physical) and ``{"best", "candidates"}``.
    """
    config = dict(config or {})
    space = space_of(model)
    opts = choices(model)
    base = export_elastic(copy.deepcopy(model))
    budget = budget_for(base, constraints, dummy_input)
    ref = budget.reference
    ev = SubnetEvaluator(
        base,
        space,
        keep_order(space, channel_importance(base, space, "magnitude")),
        dummy_input,
        need_flops=budget.needs_flops,
    )
    smallest = {k: v[0] for k, v in opts.items()}
    if not budget.ok(ev.cost(smallest)):
        raise ValueError(
            f"constraints: {budget.limits} cannot be met; the smallest sub-net of "
            f"the search space costs {ev.cost(smallest)} (unpruned: {ref})"
        )
    rng = random.Random(int(config.get("seed", 0)))
    score_func: Callable[[nn.Module], float] | None = config.get("score_func")
    n = int(config.get("num_candidates", 16))
    cands: list[dict[str, Any]] = []

    def sample(parent: Subnet | None) -> Subnet:
        for _ in range(50):
            if parent is None:
                s = {k: rng.choice(v) for k, v in opts.items()}
            else:
                s = dict(parent)
                k = rng.choice(list(opts))
                s[k] = rng.choice(opts[k])
            if budget.ok(ev.cost(s)):
                return s
        return smallest

    for i in tqdm(range(n), desc="nas search", leave=False):
        top = sorted(cands, key=lambda c: -c["score"])[:4]
        subnet = sample(rng.choice(top)["subnet"] if top and i >= n // 2 else None)
        cost = ev.cost(subnet)
        if score_func is None:
            score = budget.usage(cost) if budget.limits else 0.0
        else:
            m = ev.materialize(subnet)
            recalibrate_batchnorm(m, config.get("data_loader"), config.get("forward_func"))
            try:
                score = float(score_func(m))
            except Exception as err:
                raise ScoreFunctionError(f"score_func raised {type(err).__name__}: {err}") from err
        cands.append({"subnet": subnet, "cost": cost, "score": score})
    cands.sort(key=lambda c: -c["score"])
    activate(model, ev.keep(cands[0]["subnet"]))
    return model, {"best": cands[0], "candidates": cands, "reference": ref}


def export(model: nn.Module) -> nn.Module:
    """Make the active subnet physical: a plain, smaller ``nn.Module`` (recorded in its state)."""
    space_of(model)
    return apply_mode(model, "export_nas")
