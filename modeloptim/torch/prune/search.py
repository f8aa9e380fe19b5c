"""Finding a subnet under a FLOPs/params budget.

A subnet is ``{group name: number of channels}`` (channels are taken in importance order) plus
optional layer drops. Candidates are generated as per-group *allocation multipliers* around a
uniform width; for each candidate a global scale is bisected so that its cost lands just under
the budget, so every candidate uses the budget and only the allocation differs. Candidates are
scored by the user's ``score_func`` on a materialized copy (after BatchNorm re-calibration);
random sampling seeds an evolutionary loop (mutation + crossover of the best multipliers). The
search state is checkpointed after every candidate so an interrupted search resumes.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from modeloptim.torch.prune.observe import limited, run_batch
from modeloptim.torch.prune.plan import PrunePlan
from modeloptim.torch.prune.space import SearchSpace
from modeloptim.torch.utils.profile import count_flops, count_params
from modeloptim.utils.io import atomic_file

__all__ = [
    "Budget",
    "ScoreFunctionError",
    "SubnetEvaluator",
    "budget_for",
    "parse_constraints",
    "recalibrate_batchnorm",
]

Subnet = dict[str, int]


class ScoreFunctionError(RuntimeError):
    """The user's ``score_func`` raised while scoring a candidate."""


@dataclass
class Budget:
    """Upper bounds on cost (absolute numbers)."""

    limits: dict[str, float]
    reference: dict[str, int]

    @property
    def needs_flops(self) -> bool:
        """Whether a limit is on FLOPs (so candidates' FLOPs must be counted)."""
        return "flops" in self.limits

    def ok(self, cost: dict[str, int]) -> bool:
        """Whether ``cost`` fits every limit."""
        return all(cost[k] <= v for k, v in self.limits.items())

    def usage(self, cost: dict[str, int]) -> float:
        """Largest ``cost / limit`` ratio (1.0 = exactly at the budget)."""
        return max(cost[k] / v for k, v in self.limits.items())


def budget_for(model: nn.Module, constraints: Any, dummy_input: Any) -> Budget:
    """`parse_constraints` against ``model``'s own size (percentages are of the unpruned model).

    FLOPs are only counted (one forward of ``dummy_input``) when ``constraints`` limit them;
    otherwise the reference FLOPs are 0 (see `Budget.needs_flops`).
    """
    needs_flops = isinstance(constraints, dict) and "flops" in constraints
    reference = {
        "params": count_params(model),
        "flops": count_flops(model, dummy_input) if needs_flops else 0,
    }
    return parse_constraints(constraints, reference)


def parse_constraints(constraints: Any, reference: dict[str, int]) -> Budget:
    """``{"flops": "60%" | number, "params": "75%" | number}`` -> `Budget`.

    Raises:
        ValueError: unknown key, empty dict, or a value that is not a positive number/percent.
    """
    if not isinstance(constraints, dict) or not constraints:
        raise ValueError(
            'constraints: expected a dict like {"flops": "60%"} or {"params": 1e6}, '
            f"got {constraints!r}"
        )
    limits = {}
    for key, val in constraints.items():
        if key not in ("flops", "params"):
            raise ValueError(f"constraints: unknown key {key!r}; expected 'flops' or 'params'")
        if isinstance(val, str) and val.strip().endswith("%"):
            try:
                frac = float(val.strip()[:-1]) / 100
            except ValueError:
                raise ValueError(
                    f"constraints[{key!r}]: cannot read {val!r} as a percentage"
                ) from None
            limit = frac * reference[key]
        elif isinstance(val, int | float) and not isinstance(val, bool):
            limit = float(val)
        else:
            raise ValueError(
                f"constraints[{key!r}]: expected a percentage string like '60%' or "
                f"an absolute number, got {val!r}"
            )
        if not limit > 0:
            raise ValueError(f"constraints[{key!r}]: must be positive, got {val!r}")
        limits[key] = limit
    return Budget(limits, reference)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    data: Iterable[Any] | None,
    forward_func: Callable[[nn.Module, Any], Any] | None = None,
    max_batches: int = 8,
) -> None:
    """Recompute BatchNorm running statistics of ``model`` from ``data`` (cumulative average).

    Pruning changes the statistics of every channel that survives, so the stored ones are stale.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or data is None:
        return
    saved = [(m.momentum, m.training) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for batch in limited(data, max_batches):
            run_batch(model, batch, forward_func)
    finally:
        for m, (mom, tr) in zip(bns, saved, strict=True):
            m.momentum = mom
            m.train(tr)
        model.train(was_training)


@dataclass
class SubnetEvaluator:
    """Materializes, costs and scores subnets of one model and space (with caching).

    Attributes:
        model: the unpruned model (never modified).
        space: its search space.
        order: per group, channel indices from most to least important.
        dummy_input: input for FLOPs counting.
        layer_order: per depth container, layer indices from least to most important.
    """

    model: nn.Module
    space: SearchSpace
    order: dict[str, torch.Tensor]
    dummy_input: Any
    layer_order: dict[str, list[int]] = field(default_factory=dict)
    need_flops: bool = True
    _cache: dict[tuple[Any, ...], dict[str, int]] = field(default_factory=dict)
    _elastic: nn.Module | None = None

    def _flops(self, keep: torch.Tensor) -> int:
        """FLOPs of a subnet, counted on one elastic copy of the model (no copy per subnet)."""
        from modeloptim.torch.prune.elastic import activate, convert_elastic

        if self._elastic is None:
            self._elastic = convert_elastic(copy.deepcopy(self.model), self.space)
        activate(self._elastic, keep)
        n = torch.get_num_threads()
        torch.set_num_threads(1)  # one tiny forward: thread start-up would dominate
        try:
            return count_flops(self._elastic, self.dummy_input)
        finally:
            torch.set_num_threads(n)

    def keep(self, subnet: Subnet) -> torch.Tensor:
        """Global keep vector of the top ``subnet[g]`` channels of each group."""
        return self.space.keep_vector(
            {g.name: self.order[g.name][: subnet.get(g.name, g.size)] for g in self.space.groups}
        )

    def plan(self, subnet: Subnet, depth: dict[str, int] | None = None) -> PrunePlan:
        """Plan keeping the top ``subnet[g]`` channels of each group (full when missing)."""
        return self.space.plan(self.keep(subnet), self.drops(depth))

    def drops(self, depth: dict[str, int] | None) -> dict[str, list[int]]:
        """Least important layers to drop so that ``depth[container]`` layers remain."""
        return {
            c: sorted(self.layer_order[c][: self._n_layers(c) - k])
            for c, k in (depth or {}).items()
        }

    def _n_layers(self, container: str) -> int:
        return next(d.size for d in self.space.depth if d.container == container)

    def materialize(self, subnet: Subnet, depth: dict[str, int] | None = None) -> nn.Module:
        """A pruned copy of the model."""
        return self.plan(subnet, depth).apply(copy.deepcopy(self.model))

    def cost(self, subnet: Subnet, depth: dict[str, int] | None = None) -> dict[str, int]:
        """``{"params", "flops"}`` of a subnet (FLOPs only when needed)."""
        key = (tuple(sorted(subnet.items())), tuple(sorted((depth or {}).items())))
        if key not in self._cache:
            plan = self.plan(subnet, depth)
            self._cache[key] = {"params": _plan_params(self.model, plan)}
            if self.need_flops and plan.drop_layers:  # the elastic forward keeps all layers
                self._cache[key]["flops"] = count_flops(
                    plan.apply(copy.deepcopy(self.model)), self.dummy_input
                )
            elif self.need_flops:
                self._cache[key]["flops"] = self._flops(self.keep(subnet))
        return self._cache[key]


def _plan_params(model: nn.Module, plan: PrunePlan) -> int:
    """Parameter count after ``plan`` without materializing it."""
    from modeloptim.torch.prune.plan import lookup_tensor

    sizes: dict[int, int] = {}
    for name, dims in plan.tensors.items():
        t = lookup_tensor(model, name)
        shape = list(t.shape)
        for d, idx in dims.items():
            shape[d] = idx.numel()
        sizes[id(t)] = math.prod(shape)
    dropped: set[int] = set()
    for container, drops in plan.drop_layers.items():
        layers: Any = model.get_submodule(container)
        for i in drops:
            dropped.update(id(p) for p in layers[i].parameters())
    total, seen = 0, set()
    for p in model.parameters():
        if id(p) in seen or id(p) in dropped:
            continue
        seen.add(id(p))
        total += sizes.get(id(p), p.numel())
    return total


def scaled_subnet(
    space: SearchSpace, mult: dict[str, float], scale: float, fixed: Subnet | None = None
) -> Subnet:
    """Sizes ``size * clamp(scale * mult, 0, 1)`` rounded down to each group's granule."""
    out = {}
    for g in space.groups:
        if fixed and g.name in fixed:
            out[g.name] = fixed[g.name]
            continue
        r = min(1.0, max(0.0, scale * mult.get(g.name, 1.0)))
        n = math.floor(r * g.size / g.granule + 1e-9) * g.granule
        out[g.name] = max(g.granule if g.size >= g.granule else 1, min(g.size, n))
    return out


def fit_scale(
    ev: SubnetEvaluator,
    budget: Budget,
    mult: dict[str, float],
    depth: dict[str, int] | None = None,
    fixed: Subnet | None = None,
    iters: int = 14,
) -> Subnet:
    """Largest uniform scale (bisection) whose subnet fits ``budget``.

    Raises:
        ValueError: even the smallest subnet exceeds the budget.
    """
    smallest = scaled_subnet(ev.space, mult, 0.0, fixed)
    low_cost = ev.cost(smallest, depth)
    if not budget.ok(low_cost):
        need = {k: f"{v:.4g}" for k, v in budget.limits.items()}
        raise ValueError(
            f"constraints: {need} cannot be met; the smallest sub-net the search "
            f"space allows costs {low_cost} (the unpruned model: "
            f"{budget.reference})"
        )
    hi = 1.0 / max(min(mult.values(), default=1.0), 1e-6)
    if budget.ok(ev.cost(scaled_subnet(ev.space, mult, hi, fixed), depth)):
        return scaled_subnet(ev.space, mult, hi, fixed)
    lo = 0.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if budget.ok(ev.cost(scaled_subnet(ev.space, mult, mid, fixed), depth)):
            lo = mid
        else:
            hi = mid
    return fill_budget(ev, budget, scaled_subnet(ev.space, mult, lo, fixed), depth, fixed)


def fill_budget(
    ev: SubnetEvaluator,
    budget: Budget,
    subnet: Subnet,
    depth: dict[str, int] | None = None,
    fixed: Subnet | None = None,
    rounds: int = 2,
) -> Subnet:
    """Greedily widen groups by one step while the budget holds.

    Rounding every group down to its granule (and coarse steps such as whole attention heads)
    can leave part of the budget unused; this spends it, smallest relative width first.
    """
    subnet = dict(subnet)
    for _ in range(rounds):
        grown = False
        for g in sorted(ev.space.groups, key=lambda g: subnet[g.name] / g.size):
            if (fixed and g.name in fixed) or subnet[g.name] >= g.size:
                continue
            trial = dict(subnet)
            trial[g.name] = min(g.size, subnet[g.name] + g.granule)
            if budget.ok(ev.cost(trial, depth)):
                subnet, grown = trial, True
        if not grown:
            break
    return subnet


@dataclass
class SearchConfig:
    """Options of the score-driven search (validated by the mode configs)."""

    num_candidates: int = 12
    population: int = 4
    mutation: float = 0.25
    seed: int = 0
    checkpoint: str | None = None
    bn_calib_batches: int = 8


def run_search(
    ev: SubnetEvaluator,
    budget: Budget,
    score_func: Callable[[nn.Module], float],
    cfg: SearchConfig,
    calib_data: Iterable[Any] | None = None,
    forward_func: Callable[[nn.Module, Any], Any] | None = None,
    depth: dict[str, int] | None = None,
    fixed: Subnet | None = None,
) -> dict[str, Any]:
    """Random + evolutionary search; returns the search state (best subnet first).

    Groups in ``fixed`` keep the given sizes in every candidate.
    """
    rng = random.Random(cfg.seed)
    names = [g.name for g in ev.space.groups]
    state: dict[str, Any] = {"candidates": [], "best": None}
    if cfg.checkpoint and os.path.exists(cfg.checkpoint):
        state = torch.load(cfg.checkpoint, weights_only=True)
    done = {tuple(c["mult"]) for c in state["candidates"]}

    def evaluate(mult: list[float]) -> None:
        key = tuple(round(m, 6) for m in mult)
        if key in done:
            return
        subnet = fit_scale(ev, budget, dict(zip(names, key, strict=True)), depth, fixed)
        m = ev.materialize(subnet, depth)
        recalibrate_batchnorm(m, calib_data, forward_func, cfg.bn_calib_batches)
        try:
            score = float(score_func(m))
        except Exception as err:
            raise ScoreFunctionError(
                f"score_func raised {type(err).__name__}: {err} (the model was not changed)"
            ) from err
        rec = {"mult": list(key), "subnet": subnet, "score": score, "cost": ev.cost(subnet, depth)}
        state["candidates"].append(rec)
        done.add(key)
        if state["best"] is None or score > state["best"]["score"]:
            state["best"] = rec
        if cfg.checkpoint:
            with atomic_file(cfg.checkpoint) as tmp:
                torch.save(state, tmp)

    plan = [[1.0] * len(names)]
    plan += [
        [math.exp(rng.gauss(0.0, cfg.mutation)) for _ in names]
        for _ in range(cfg.num_candidates * 4)
    ]
    n_random = max(1, cfg.num_candidates // 2)
    bar = tqdm(total=cfg.num_candidates, desc="search", leave=False)
    for mult in plan[:n_random]:
        evaluate(mult)
        bar.update(1)
    while len(state["candidates"]) < cfg.num_candidates:
        ranked = sorted(state["candidates"], key=lambda c: -c["score"])[: cfg.population]
        a, b = rng.choice(ranked)["mult"], rng.choice(ranked)["mult"]
        child = [
            (x if rng.random() < 0.5 else y) * math.exp(rng.gauss(0.0, cfg.mutation / 2))
            for x, y in zip(a, b, strict=True)
        ]
        before = len(state["candidates"])
        evaluate(child)
        bar.update(len(state["candidates"]) - before)
        if len(state["candidates"]) == before:  # duplicate child: perturb more next time
            cfg.mutation *= 1.1
    bar.close()
    state["candidates"].sort(key=lambda c: -c["score"])
    return state
