"""Elastic layers: run any subnet of a search space without copying the model.

Every module holding a tensor of the space is converted in place with `ElasticSlice`, a
`DynamicModule` whose weight/bias/buffer reads are sliced to the active subnet's positions (the
stored full tensors never change). Attributes that count channels (``out_features``,
``num_features``, ``normalized_shape``, ``groups``...) are set to the active subnet's values and
put back on `deactivate`/`export_elastic`. `activate(model, keep)` selects a subnet by its global
keep vector; the forward then computes exactly what the physically pruned model computes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modeloptim.torch.opt.dynamic import DynamicModule
from modeloptim.torch.prune.plan import PrunePlan, get_path, lookup_tensor, set_path, tensor_owners
from modeloptim.torch.prune.space import SearchSpace

__all__ = [
    "ElasticSlice",
    "activate",
    "convert_elastic",
    "deactivate",
    "export_elastic",
    "export_plan",
    "space_of",
]

_STATE = "_modeloptim_elastic"


class ElasticSlice(DynamicModule):
    """A layer whose tensors read as slices of the stored ones (see module docstring)."""

    def _setup(self, **kwargs: Any) -> None:
        object.__setattr__(self, "_elastic_idx", {})
        for name in kwargs["tensors"]:
            self._register_dynamic_attribute(name, _slicer(name))

    def set_positions(self, idx: dict[str, dict[int, torch.Tensor]]) -> None:
        """Kept positions per local tensor name and dim (missing: keep everything)."""
        object.__setattr__(self, "_elastic_idx", idx)


def _slicer(name: str) -> Any:
    def cb(m: nn.Module, value: Any) -> Any:
        dims = m.__dict__["_elastic_idx"].get(name)
        if not dims or value is None:
            return value
        for d, idx in sorted(dims.items()):
            value = value.index_select(d, idx)
        return value

    return cb


def convert_elastic(model: nn.Module, space: SearchSpace) -> nn.Module:
    """Make every layer of ``space`` elastic (in place) and remember the space on ``model``."""
    owners = tensor_owners(model)
    local: dict[int, tuple[nn.Module, list[str]]] = {}
    refs: dict[str, list[tuple[int, str]]] = {}
    for name in space.tensors:
        t = lookup_tensor(model, name)
        for mod, _store, key in owners[id(t)]:
            local.setdefault(id(mod), (mod, []))[1].append(key)
            refs.setdefault(name, []).append((id(mod), key))
    for mod, names in local.values():
        if isinstance(mod, DynamicModule):
            raise ValueError(
                f"model: {type(mod).__name__} is already converted; pruning must "
                "come before other modes that wrap layers"
            )
        ElasticSlice.convert(mod, tensors=names)
    orig = {k: get_path(model.get_submodule(k[0]), k[1]) for k in space.attrs}
    object.__setattr__(
        model,
        _STATE,
        {
            "space": space,
            "orig": orig,
            "refs": refs,
            "mods": {i: m for i, (m, _) in local.items()},
            "keep": None,
        },
    )
    return model


def space_of(model: nn.Module) -> SearchSpace:
    """The search space ``model`` was converted with.

    Raises:
        ValueError: ``model`` is not converted to a search space.
    """
    st = model.__dict__.get(_STATE)
    if st is None:
        raise ValueError(
            "model: not converted to a search space; call mtn.convert(model, "
            "mode, dummy_input=...) or mtp.prune first"
        )
    return st["space"]


def active_keep(model: nn.Module) -> torch.Tensor:
    """The active global keep vector (all ones when none was selected)."""
    st = model.__dict__[_STATE]
    keep = st["keep"]
    return keep if keep is not None else torch.ones(st["space"].num_channels, dtype=torch.bool)


def activate(
    model: nn.Module, keep: torch.Tensor, drop_layers: dict[str, list[int]] | None = None
) -> None:
    """Make ``model`` compute the subnet of global keep vector ``keep`` (bool).

    ``drop_layers`` (``{ModuleList name: indices}``) is recorded for `export_plan` only: the
    elastic forward still runs every layer.
    """
    space = space_of(model)
    st = model.__dict__[_STATE]
    plan = space.plan(keep)
    per_mod: dict[int, dict[str, dict[int, torch.Tensor]]] = {}
    for name, dims in plan.tensors.items():
        for mod_id, key in st["refs"][name]:
            per_mod.setdefault(mod_id, {})[key] = dims
    for mod_id, mod in st["mods"].items():
        mod.set_positions(per_mod.get(mod_id, {}))
    for owner, attr, value in plan.attrs:
        set_path(model.get_submodule(owner), attr, value)
    st["keep"] = keep.clone()
    st["drops"] = dict(drop_layers or {})


def export_plan(model: nn.Module) -> PrunePlan:
    """The physical plan of the active subnet (including recorded layer drops)."""
    st = model.__dict__[_STATE]
    return space_of(model).plan(active_keep(model), st.get("drops"))


def deactivate(model: nn.Module) -> None:
    """Back to the full network."""
    space = space_of(model)
    activate(model, torch.ones(space.num_channels, dtype=torch.bool))
    model.__dict__[_STATE]["keep"] = None


def export_elastic(model: nn.Module) -> nn.Module:
    """Undo `convert_elastic`: plain layers with full tensors and original attributes."""
    st = model.__dict__.get(_STATE)
    if st is None:
        return model
    for (owner, attr), value in st["orig"].items():
        set_path(model.get_submodule(owner), attr, value)
    for mod in st["mods"].values():
        mod.export()
    del model.__dict__[_STATE]
    return model
