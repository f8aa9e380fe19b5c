"""Channel importance: which channels of each group to keep first.

Every method returns one score per global channel id of a `SearchSpace` (higher = keep).
``IMPORTANCE`` is the registry (extension point):

- ``"magnitude"`` (fastnas): L1 norm of each channel's weights in every tensor of the group,
  each tensor normalized by its mean so no single layer dominates.
- ``"gradient"`` (gradnas): first-order Taylor score ``|w * dL/dw|`` accumulated over batches.
- ``"activation"`` (minitron): mean absolute activation of each channel at the outputs (and,
  for Linear layers, inputs) of the layers that hold it, accumulated over batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from modeloptim.torch.prune.observe import limited, observing, run_batch
from modeloptim.torch.prune.plan import lookup_tensor
from modeloptim.torch.prune.space import SearchSpace
from modeloptim.utils.registry import Registry

__all__ = ["IMPORTANCE", "channel_importance"]

ImportanceFn = Callable[..., torch.Tensor]


#: ``name -> fn(model, space, **kwargs) -> scores`` (float64, ``(num_channels,)``).
IMPORTANCE: Registry[ImportanceFn] = Registry("importance")


def _scatter(scores: torch.Tensor, pos_maps: torch.Tensor, per_pos: torch.Tensor) -> None:
    per_pos = per_pos.double() / per_pos.double().mean().clamp(min=1e-30)
    for row in pos_maps.reshape(-1, per_pos.numel()):
        sel = row >= 0
        scores.index_add_(0, row[sel], per_pos[sel])


def _per_position(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.detach().abs().double().transpose(0, dim).reshape(t.shape[dim], -1).sum(1)


def _from_tensors(
    model: nn.Module, space: SearchSpace, value: Callable[[torch.Tensor], torch.Tensor | None]
) -> torch.Tensor:
    scores = torch.zeros(space.num_channels, dtype=torch.float64)
    for name, dims in space.tensors.items():
        v = value(lookup_tensor(model, name))
        if v is None or v.dim() == 0:
            continue
        for dim, maps in dims.items():
            _scatter(scores, maps, _per_position(v, dim))
    return scores


@IMPORTANCE.register("magnitude")
def magnitude_importance(model: nn.Module, space: SearchSpace, **_: Any) -> torch.Tensor:
    """L1 weight magnitude per channel (no data needed)."""
    return _from_tensors(model, space, lambda t: t if t.is_floating_point() else None)


@IMPORTANCE.register("gradient")
def gradient_importance(
    model: nn.Module,
    space: SearchSpace,
    *,
    data_loader: Iterable[Any],
    loss_func: Callable[[nn.Module, Any], torch.Tensor],
    max_batches: int | None = None,
    **_: Any,
) -> torch.Tensor:
    """Taylor score ``sum_batches |w * grad|`` per channel.

    Args:
        model: the model (gradients are accumulated and cleared again).
        space: its search space.
        data_loader: batches.
        loss_func: ``loss_func(model, batch) -> scalar loss``.
        max_batches: stop after this many batches.
    """
    acc: dict[str, torch.Tensor] = {}
    try:
        with observing(model):
            for batch in limited(data_loader, max_batches, "gradient importance"):
                model.zero_grad(set_to_none=True)
                loss_func(model, batch).backward()
                for name in space.tensors:
                    t = lookup_tensor(model, name)
                    if t.grad is not None:
                        acc[name] = acc.get(name, 0) + (t.detach() * t.grad).abs()
    finally:
        model.zero_grad(set_to_none=True)
    if not acc:
        raise ValueError("data_loader: no batch produced gradients for the searchable layers")
    return _from_tensors(
        model,
        space,
        lambda t: next((v for n, v in acc.items() if lookup_tensor(model, n) is t), None),
    )


_CHANNEL_FIRST = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.InstanceNorm2d,
)


def _probes(model: nn.Module, space: SearchSpace) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """``(module, "output"|"input", position maps of the channel dim)`` to observe."""
    out = []
    for mod_name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        key = f"{mod_name}.weight" if mod_name else "weight"
        if not isinstance(w, torch.Tensor) or key not in space.tensors:
            continue
        dims = space.tensors[key]
        out_dim = 1 if isinstance(mod, nn.Embedding) else 0
        if out_dim in dims:
            out.append((mod, "output", dims[out_dim]))
        if isinstance(mod, nn.Linear) and 1 in dims:
            out.append((mod, "input", dims[1]))
    return out


@IMPORTANCE.register("activation")
@torch.no_grad()
def activation_importance(
    model: nn.Module,
    space: SearchSpace,
    *,
    data_loader: Iterable[Any],
    forward_func: Callable[[nn.Module, Any], Any] | None = None,
    max_batches: int | None = None,
    **_: Any,
) -> torch.Tensor:
    """Mean ``|activation|`` per channel at the layers holding it (Minitron's criterion).

    Args:
        model: the model.
        space: its search space.
        data_loader: batches.
        forward_func: ``forward_func(model, batch)``; default calls ``model(batch)``.
        max_batches: stop after this many batches.
    """
    probes = _probes(model, space)
    if not probes:
        raise ValueError("model: no layer with an observable channel dim in the search space")
    sums: list[torch.Tensor | None] = [None] * len(probes)
    handles = []

    def hook_for(k: int, where: str, mod: nn.Module) -> Callable[..., None]:
        cdim = 1 if isinstance(mod, _CHANNEL_FIRST) else -1

        def hook(_m: nn.Module, args: Any, out: Any) -> None:
            x = args[0] if where == "input" else (out[0] if isinstance(out, tuple) else out)
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                return
            v = x.detach().abs().double().movedim(cdim, 0).reshape(x.shape[cdim], -1).mean(1)
            prev = sums[k]
            sums[k] = v if prev is None else prev + v

        return hook

    for k, (mod, where, _maps) in enumerate(probes):
        handles.append(mod.register_forward_hook(hook_for(k, where, mod)))
    with observing(model, handles):
        for batch in limited(data_loader, max_batches, "activation importance"):
            run_batch(model, batch, forward_func)
    scores = torch.zeros(space.num_channels, dtype=torch.float64)
    for (_mod, _where, maps), v in zip(probes, sums, strict=True):
        if v is not None and v.numel() == maps.shape[-1]:
            _scatter(scores, maps, v)
    return scores


def channel_importance(
    model: nn.Module, space: SearchSpace, method: str, **kwargs: Any
) -> torch.Tensor:
    """Scores per global channel id by ``method`` (see module docstring)."""
    return IMPORTANCE[method](model, space, **kwargs)


def keep_order(space: SearchSpace, scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per group, its channel indices from most to least important (ties: lower index first)."""
    out = {}
    for g in space.groups:
        s = scores[g.offset : g.offset + g.size]
        # stable sort on -score keeps index order among equal scores
        out[g.name] = torch.sort(-s, stable=True).indices
    return out
