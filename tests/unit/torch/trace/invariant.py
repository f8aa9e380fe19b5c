"""Test utility: prune half of every searchable group and check the model still runs."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from modeloptim.torch.trace import AnalysisResult, prune_group
from modeloptim.torch.trace.api import normalize_example


def _shapes(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items() if v is not None}
    if isinstance(out, tuple | list):
        return [_shapes(v) for v in out]
    return None


def half(n: int) -> list[int]:
    """Every other channel (keeps at least one)."""
    return list(range(0, n, 2))


@torch.no_grad()
def check_prune_each(model: nn.Module, example: Any, res: AnalysisResult) -> int:
    """Prune each searchable group on its own copy; forward must run with the same shapes."""
    args, kwargs = normalize_example(example)
    model.eval()
    ref = _shapes(model(*args, **kwargs))
    for g in res.searchable_groups:
        m2 = copy.deepcopy(model)
        prune_group(m2, g, half(g.size), update_analysis=False)
        try:
            out = m2(*args, **kwargs)
        except Exception as err:
            raise AssertionError(
                f"pruning group {g.name} ({g.size}) broke forward: {err}\n"
                f"members: {[(m.tensor, m.dim) for m in g.members]}"
            ) from err
        assert _shapes(out) == ref, g.name
        for m in g.members:
            t = (
                m2.get_parameter(m.tensor)
                if m.tensor in dict(m2.named_parameters())
                else m2.get_buffer(m.tensor)
            )
            orig = (
                model.get_parameter(m.tensor)
                if m.tensor in dict(model.named_parameters())
                else model.get_buffer(m.tensor)
            )
            assert t.shape[m.dim] < orig.shape[m.dim], (g.name, m.tensor)
    return len(res.searchable_groups)


@torch.no_grad()
def check_prune_all(model: nn.Module, example: Any, res: AnalysisResult) -> None:
    """Prune every searchable group of one analysis in sequence on one copy."""
    args, kwargs = normalize_example(example)
    model.eval()
    ref = _shapes(model(*args, **kwargs))
    for g in res.searchable_groups:
        prune_group(model, g, half(g.size))
    assert _shapes(model(*args, **kwargs)) == ref
