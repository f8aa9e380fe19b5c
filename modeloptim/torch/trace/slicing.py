"""Physically remove channels of a dependency group from a model (the seed of pruning)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from modeloptim.torch.trace.fixups import run_fixups
from modeloptim.torch.trace.result import ChannelGroup
from modeloptim.torch.trace.symbols import Symbol


def _keep_tensor(group: ChannelGroup, keep_idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
    idx = torch.as_tensor(keep_idx, dtype=torch.long).reshape(-1)
    if idx.numel() == 0:
        raise ValueError("keep_idx: expected at least one channel index to keep, got none")
    if int(idx.min()) < 0 or int(idx.max()) >= group.size:
        raise ValueError(
            f"keep_idx: indices must lie in [0, {group.size}) for group "
            f"{group.name!r}, got min {int(idx.min())} max {int(idx.max())}"
        )
    if torch.unique(idx).numel() != idx.numel():
        raise ValueError("keep_idx: indices must be unique")
    keep = torch.zeros(group.size, dtype=torch.bool)
    keep[idx] = True
    return keep


@torch.no_grad()
def prune_group(
    model: nn.Module,
    group: ChannelGroup,
    keep_idx: Sequence[int] | torch.Tensor,
    *,
    update_analysis: bool = True,
) -> nn.Module:
    """Keep only channels ``keep_idx`` of ``group`` in every tensor and layer it spans.

    Slices each member parameter/buffer along its dim (concat offsets, flatten blocks and
    head factors handled through the group's layouts), rewrites the module attributes the
    layer rules declare (``out_features``, ``num_features``, ``groups``...). Tied tensors are
    sliced once. Analyses of ``model`` made before are stale afterwards.

    Args:
        model: the analyzed model (changed in place and returned).
        group: a searchable group from the model's analysis.
        keep_idx: channel indices to keep, each in ``[0, group.size)``.
        update_analysis: record the new sizes in the analysis so that other groups of the
            same analysis can be pruned next (pass ``False`` when pruning copies of the
            model one group at a time).

    Returns:
        ``model``.

    Raises:
        ValueError: the group is frozen or ``keep_idx`` is invalid (checked before any change).
    """
    if not group.searchable:
        raise ValueError(
            f"group: {group.name!r} is frozen and cannot be pruned: {'; '.join(group.reasons[:3])}"
        )
    if group._ctx is None:
        raise ValueError("group: not produced by analyze_symbols/dependency_groups")
    keep = _keep_tensor(group, keep_idx)
    atoms = group._ctx.atoms
    plan: list[tuple[str, int, torch.Tensor]] = []
    for name, dim, desc in group._dims:
        t = _lookup(model, name)
        mask = atoms.keep_mask(desc, group.root, keep)
        if t.shape[dim] != mask.numel():
            raise ValueError(
                f"group: {name} dim {dim} has {t.shape[dim]} channels but the "
                f"analysis saw {mask.numel()} (was the model changed since?)"
            )
        plan.append((name, dim, mask))
    new_sizes: dict[int, int] = {}
    for sym_owner, attr, spec in group._attrs:
        del sym_owner, attr
        for s in _symbols(spec):
            sd = group._ctx.sym_desc[id(s)]
            new_sizes[id(s)] = int(atoms.keep_mask(sd, group.root, keep).sum())
    for name, dim, mask in plan:
        _replace(model, name, _lookup(model, name).index_select(dim, mask.nonzero()[:, 0]))
    for owner, attr, spec in group._attrs:
        mod = model.get_submodule(owner)
        _set_path(mod, attr, _spec_value(spec, new_sizes))
    for mod in model.modules():  # RNNs cache a list of their weights
        if isinstance(mod, nn.RNNBase):
            mod._init_flat_weights()
    run_fixups(model)
    if update_analysis:
        atoms.size[group.root] = int(keep.sum())
        group.size = int(keep.sum())
        for _, _, spec in group._attrs:
            for s in _symbols(spec):
                s.size = new_sizes.get(id(s), s.size)
    return model


def _symbols(spec: Any) -> list[Symbol]:
    if isinstance(spec, Symbol):
        return [spec]
    return [s for part in spec for s in _symbols(part)]


def _spec_value(spec: Any, new: dict[int, int]) -> Any:
    def size(s: Symbol) -> int:
        return new.get(id(s), s.size)

    if isinstance(spec, Symbol):
        return size(spec)
    if isinstance(spec, tuple):
        out = 1
        for s in spec:
            out *= size(s)
        return out
    return tuple(_spec_value(p, new) for p in spec)


def _lookup(model: nn.Module, name: str) -> torch.Tensor:
    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name)
    t = getattr(mod, attr)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"group: {name} is not a tensor of the model")
    return t


def _replace(model: nn.Module, name: str, new: torch.Tensor) -> None:
    """Swap a tensor everywhere it is referenced (tied weights stay tied)."""
    old = _lookup(model, name)
    repl: Any = None
    for mod in model.modules():
        for store in (mod._parameters, mod._buffers):
            for k, v in store.items():
                if v is old:
                    if repl is None:
                        repl = (
                            nn.Parameter(new.clone(), old.requires_grad)
                            if isinstance(old, nn.Parameter)
                            else new.clone()
                        )
                    store[k] = repl


def _set_path(mod: nn.Module, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        mod = getattr(mod, p)
    setattr(mod, last, value)
