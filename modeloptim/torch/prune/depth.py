"""Layer importance for depth pruning (Block Influence: how much a layer changes its input).

A layer whose output is nearly parallel to its input (cosine similarity close to 1 per token)
adds little and is dropped first (Minitron's depth criterion).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from modeloptim.torch.prune.observe import limited, observing, run_batch

__all__ = ["block_influence", "layer_importance_order"]


def _hidden(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, tuple | list) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return None


@torch.no_grad()
def block_influence(
    model: nn.Module,
    container: str,
    data: Iterable[Any],
    forward_func: Callable[[nn.Module, Any], Any] | None = None,
    max_batches: int | None = None,
) -> torch.Tensor:
    """Mean ``1 - cos(input, output)`` of every layer of ``container`` (float64, ``(layers,)``).

    Raises:
        ValueError: ``container`` is not an ``nn.ModuleList`` or no layer saw a hidden state.
    """
    layers = model.get_submodule(container)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"container: {container!r} is not an nn.ModuleList")
    sums = torch.zeros(len(layers), dtype=torch.float64)
    counts = torch.zeros(len(layers), dtype=torch.float64)
    handles = []

    def hook_for(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            x = _hidden(args) if args else _hidden(kwargs.get("hidden_states"))
            y = _hidden(out)
            if x is None or y is None or x.shape != y.shape:
                return
            cos = torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1)
            sums[i] += float((1 - cos).sum())
            counts[i] += cos.numel()

        return hook

    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(hook_for(i), with_kwargs=True))
    with observing(model, handles):
        for batch in limited(data, max_batches):
            run_batch(model, batch, forward_func)
    if not bool((counts > 0).all()):
        raise ValueError(
            f"container: layers of {container!r} did not map a hidden state to one "
            "of the same shape; cannot rank them"
        )
    return sums / counts


def layer_importance_order(
    model: nn.Module,
    containers: list[str],
    data: Iterable[Any],
    forward_func: Callable[[nn.Module, Any], Any] | None = None,
    max_batches: int | None = None,
) -> dict[str, list[int]]:
    """Per container, layer indices from least to most influential."""
    data = list(data) if not isinstance(data, list | tuple) else data
    return {
        c: torch.sort(
            block_influence(model, c, data, forward_func, max_batches), stable=True
        ).indices.tolist()
        for c in containers
    }
