"""``mtp.prune``: one call from a trained model to a physically smaller one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from modeloptim.torch.opt.state import apply_mode
from modeloptim.torch.prune.builders import build_space
from modeloptim.torch.prune.elastic import activate
from modeloptim.torch.prune.importance import channel_importance, keep_order
from modeloptim.torch.prune.modes import SPACE_MODES, SpaceModeConfig, pending_space
from modeloptim.torch.prune.search import (
    SearchConfig,
    SubnetEvaluator,
    budget_for,
    fit_scale,
    parse_constraints,
    recalibrate_batchnorm,
    run_search,
)
from modeloptim.torch.prune.space import SearchSpace

__all__ = ["prepare_space", "prune"]

_IMPORTANCE = {
    "fastnas": "magnitude",
    "gradnas": "gradient",
    "minitron": "activation",
    "autonas": "magnitude",
}
_SEARCH_KEYS = {
    "score_func",
    "data_loader",
    "forward_func",
    "loss_func",
    "checkpoint",
    "num_candidates",
    "population",
    "seed",
    "max_iter_data_loader",
    "bn_calib_batches",
    "num_layers",
    "importance",
}


def parse_mode(mode: Any) -> tuple[str, SpaceModeConfig]:
    """``"fastnas"`` / ``("fastnas", cfg)`` / ``[("fastnas", cfg)]`` -> (name, validated cfg)."""
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    name, cfg = (
        (mode, None)
        if isinstance(mode, str)
        else (mode if isinstance(mode, tuple) and len(mode) == 2 else (None, None))
    )
    if name not in SPACE_MODES:
        raise ValueError(
            f"mode: expected one of {sorted(SPACE_MODES)} (or [(name, config)]), got {mode!r}"
        )
    cls = SPACE_MODES[name]
    if isinstance(cfg, BaseModel):
        cfg = cfg.model_dump()
    try:
        return name, cls.model_validate(cfg or {})
    except Exception as err:
        raise ValueError(f"mode config for {name!r}: {err}") from None


def prepare_space(
    model: nn.Module, name: str, cfg: SpaceModeConfig, dummy_input: Any
) -> SearchSpace:
    """Build the space of ``model`` for mode ``name`` and apply the config's divisors."""
    space = build_space(model, dummy_input, cfg.model_dump(), cfg.builder)
    kinds = getattr(cfg, "prune", None)
    if kinds is not None:
        unknown = set(kinds) - {g.kind for g in space.groups}
        if unknown:
            raise ValueError(
                f"mode config for {name!r}: prune={kinds} names kinds this model "
                f"lacks {sorted(unknown)}; it has "
                f"{sorted({g.kind for g in space.groups})}"
            )
    for g in space.groups:
        if g.kind != "heads":
            g.granule = cfg.channel_divisor if g.size >= 2 * cfg.channel_divisor else 1
    return space


def _search_cfg(config: dict[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    unknown = set(config) - _SEARCH_KEYS
    if unknown:
        raise ValueError(f"config: unknown keys {sorted(unknown)}; allowed: {sorted(_SEARCH_KEYS)}")
    if (
        "score_func" in config
        and config["score_func"] is not None
        and not callable(config["score_func"])
    ):
        raise TypeError("config['score_func']: expected a callable score_func(model) -> float")
    return config


def _importance(
    model: nn.Module, space: SearchSpace, method: str, sc: dict[str, Any]
) -> torch.Tensor:
    data = sc.get("data_loader")
    kw: dict[str, Any] = {"max_batches": sc.get("max_iter_data_loader")}
    if method == "gradient":
        if data is None or sc.get("loss_func") is None:
            raise ValueError(
                "config: gradnas needs 'data_loader' and 'loss_func(model, batch) "
                "-> loss' for gradient importance"
            )
        kw.update(data_loader=data, loss_func=sc["loss_func"])
    elif method == "activation":
        if data is None:
            raise ValueError(
                "config: minitron needs 'data_loader' (calibration batches) for "
                "activation importance"
            )
        kw.update(data_loader=data, forward_func=sc.get("forward_func"))
    return channel_importance(model, space, method, **kw)


def _restrict(space: SearchSpace, kinds: list[str] | None) -> dict[str, int]:
    """Groups whose kind may not shrink stay at full size."""
    if kinds is None:
        return {}
    return {g.name: g.size for g in space.groups if g.kind not in kinds}


def prune(
    model: nn.Module,
    mode: Any,
    constraints: dict[str, Any],
    dummy_input: Any,
    config: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune ``model`` to fit ``constraints`` and make the result physically smaller.

    Args:
        model: the trained model (converted in place; use the returned model).
        mode: ``"fastnas"``, ``"gradnas"``, ``"minitron"`` or ``[(name, mode config)]``.
        constraints: ``{"flops": "50%"}`` and/or ``{"params": "75%" | number}``.
        dummy_input: one forward's input (tensor, tuple, dict or ``(args, kwargs)``); used to
            trace the model and count FLOPs.
        config: search options: ``score_func(model) -> float`` (higher is better; enables the
            search over allocations), ``data_loader`` (BatchNorm re-calibration and
            gradient/activation importance), ``forward_func(model, batch)``,
            ``loss_func(model, batch)`` (gradnas), ``checkpoint`` (search state file; an
            existing one is resumed), ``num_candidates``, ``population``, ``seed``,
            ``max_iter_data_loader``, ``bn_calib_batches``, ``importance`` (override the
            mode's method), ``num_layers`` (``{container: layers to keep}``, depth pruning).

    Returns:
        ``(model, search_state)``: the pruned plain model (its optimizer state records the
        space and the plan, so ``mto.save``/``mto.restore`` round-trip it) and the search
        state (``best`` subnet with its cost and score, all ``candidates``).

    Raises:
        ValueError / TypeError: bad mode, constraints or config, a model without searchable
            groups, or a budget below the smallest subnet; ``model`` is unchanged.
        ScoreFunctionError: ``score_func`` raised; ``model`` is unchanged.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    name, cfg = parse_mode(mode)
    sc = _search_cfg(config)
    parse_constraints(constraints, {"flops": 1, "params": 1})  # shape check before the work
    space = prepare_space(model, name, cfg, dummy_input)
    budget = budget_for(model, constraints, dummy_input)
    reference = budget.reference
    scores = _importance(model, space, sc.get("importance", _IMPORTANCE[name]), sc)
    ev = SubnetEvaluator(
        model, space, keep_order(space, scores), dummy_input, need_flops=budget.needs_flops
    )
    depth = _depth(model, space, sc, ev)
    fixed = _restrict(space, getattr(cfg, "prune", None))
    score_func: Callable[[nn.Module], float] | None = sc.get("score_func")
    if score_func is not None:
        scfg = SearchConfig(
            num_candidates=int(sc.get("num_candidates", 12)),
            population=int(sc.get("population", 4)),
            seed=int(sc.get("seed", 0)),
            checkpoint=sc.get("checkpoint"),
            bn_calib_batches=int(sc.get("bn_calib_batches", 8)),
        )
        state = run_search(
            ev,
            budget,
            score_func,
            scfg,
            sc.get("data_loader"),
            sc.get("forward_func"),
            depth,
            fixed,
        )
        subnet = state["best"]["subnet"]
    else:
        subnet = fit_scale(ev, budget, {g.name: 1.0 for g in space.groups}, depth, fixed)
        state = {
            "best": {"subnet": subnet, "cost": ev.cost(subnet, depth), "score": None},
            "candidates": [],
        }
    state["reference"] = reference
    state["limits"] = budget.limits
    keep = ev.keep(subnet)
    drops = ev.drops(depth)
    with pending_space(space):
        model = apply_mode(model, (name, cfg))
    activate(model, keep, drops)
    model = apply_mode(model, "export_nas")
    # the kept channels see new inputs: stored BatchNorm statistics are stale (as in the search)
    recalibrate_batchnorm(
        model, sc.get("data_loader"), sc.get("forward_func"), int(sc.get("bn_calib_batches", 8))
    )
    return model, state


def _depth(
    model: nn.Module, space: SearchSpace, sc: dict[str, Any], ev: SubnetEvaluator
) -> dict[str, int]:
    want = sc.get("num_layers")
    if not want:
        return {}
    from modeloptim.torch.prune.depth import layer_importance_order

    known = {d.container: d.size for d in space.depth}
    if not isinstance(want, dict):
        if len(known) != 1:
            raise ValueError(
                "config['num_layers']: give {container: layers} for this model; "
                f"its layer stacks: {known}"
            )
        want = {next(iter(known)): want}
    for c, k in want.items():
        if c not in known or not 1 <= int(k) <= known[c]:
            raise ValueError(
                f"config['num_layers']: {c!r} must be a layer stack of the model "
                f"({known}) and keep between 1 and all of its layers, got {k}"
            )
    if sc.get("data_loader") is None:
        raise ValueError("config: depth pruning (num_layers) needs 'data_loader'")
    ev.layer_order = layer_importance_order(
        model, list(want), sc["data_loader"], sc.get("forward_func"), sc.get("max_iter_data_loader")
    )
    return {c: int(k) for c, k in want.items()}
