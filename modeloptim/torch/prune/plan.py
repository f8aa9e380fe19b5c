"""A physical pruning plan: which positions of which tensor dims stay, and new attributes.

`PrunePlan` is plain data (it is what the ``export_nas`` mode records in the optimizer state),
and `PrunePlan.apply` replays it on a model of the original architecture: every parameter or
buffer is sliced (tied tensors once, staying tied), attributes such as ``out_features`` are
rewritten, and dropped layers leave their ``ModuleList``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["PrunePlan"]


@dataclass
class PrunePlan:
    """What to keep.

    Attributes:
        tensors: ``{qualified tensor name: {dim: kept positions (int64, ascending)}}``.
        attrs: ``[(module name, attribute path, new value)]``.
        drop_layers: ``{ModuleList name: [indices to drop]}``.
        layer_count_attrs: ``{ModuleList name: attribute path holding its length}``.
    """

    tensors: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    attrs: list[tuple[str, str, Any]] = field(default_factory=list)
    drop_layers: dict[str, list[int]] = field(default_factory=dict)
    layer_count_attrs: dict[str, str] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        """Plain-data form."""
        return {
            "tensors": {
                n: {str(d): i for d, i in dims.items()} for n, dims in self.tensors.items()
            },
            "attrs": [
                {
                    "module": m,
                    "attr": a,
                    "value": list(v) if isinstance(v, tuple) else v,
                    "tuple": isinstance(v, tuple),
                }
                for m, a, v in self.attrs
            ],
            "drop_layers": {k: list(v) for k, v in self.drop_layers.items()},
            "layer_count_attrs": dict(self.layer_count_attrs),
        }

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> PrunePlan:
        """Inverse of `to_data`."""
        return cls(
            {
                n: {int(k): torch.as_tensor(i, dtype=torch.long) for k, i in dims.items()}
                for n, dims in d["tensors"].items()
            },
            [
                (a["module"], a["attr"], tuple(a["value"]) if a["tuple"] else a["value"])
                for a in d["attrs"]
            ],
            {k: list(v) for k, v in d.get("drop_layers", {}).items()},
            dict(d.get("layer_count_attrs", {})),
        )

    # -- application ------------------------------------------------------------------------------
    def check(self, model: nn.Module) -> None:
        """Raise ValueError if the plan does not fit ``model`` (nothing is changed)."""
        for name, dims in self.tensors.items():
            t = lookup_tensor(model, name)
            for dim, idx in dims.items():
                if dim >= t.dim() or (idx.numel() and int(idx.max()) >= t.shape[dim]):
                    raise ValueError(
                        f"plan: {name} has shape {tuple(t.shape)}, which does not "
                        f"fit dim {dim} positions up to {int(idx.max())}"
                    )
        for owner, attr, _ in self.attrs:
            mod = model.get_submodule(owner)
            *parents, last = attr.split(".")
            for p in parents:
                mod = getattr(mod, p)
            if not hasattr(mod, last):
                raise ValueError(f"plan: module {owner!r} has no attribute {attr!r}")
        for container, drops in self.drop_layers.items():
            layers = model.get_submodule(container)
            if not isinstance(layers, nn.ModuleList) or max(drops) >= len(layers):
                raise ValueError(f"plan: {container!r} is not a ModuleList with layers {drops}")

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Slice ``model`` in place (checked first) and return it."""
        self.check(model)
        owners = tensor_owners(model)
        for name, dims in self.tensors.items():
            old = new = lookup_tensor(model, name)
            for dim, idx in sorted(dims.items()):
                new = new.index_select(dim, idx.to(new.device))
            _replace_everywhere(owners.get(id(old), []), old, new)
        for owner, attr, value in self.attrs:
            set_path(model.get_submodule(owner), attr, value)
        for container, drops in self.drop_layers.items():
            _drop_layers(model, container, drops, self.layer_count_attrs.get(container))
        return model


def lookup_tensor(model: nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer ``name`` (qualified) of ``model``."""
    mod_name, _, attr = name.rpartition(".")
    try:
        mod = model.get_submodule(mod_name)
    except AttributeError:
        raise ValueError(
            f"plan: the model has no module {mod_name!r} (for tensor {name!r})"
        ) from None
    t = mod._parameters.get(attr, mod._buffers.get(attr))
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"plan: {name!r} is not a parameter or buffer of the model")
    return t


def tensor_owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str, str]]]:
    """``id(tensor) -> [(module, store, key)]`` for every parameter/buffer reference."""
    out: dict[int, list[tuple[nn.Module, str, str]]] = {}
    for mod in model.modules():
        for store in ("_parameters", "_buffers"):
            for k, v in getattr(mod, store).items():
                if v is not None:
                    out.setdefault(id(v), []).append((mod, store, k))
    return out


def _replace_everywhere(
    owners: list[tuple[nn.Module, str, str]], old: torch.Tensor, new: torch.Tensor
) -> None:
    """Put ``new`` wherever ``old`` was referenced (tied tensors stay tied)."""
    repl: torch.Tensor = (
        nn.Parameter(new.contiguous().clone(), old.requires_grad)
        if isinstance(old, nn.Parameter)
        else new.contiguous().clone()
    )
    for mod, store, key in owners:
        getattr(mod, store)[key] = repl


def set_path(mod: Any, path: str, value: Any) -> None:
    """``setattr`` along a dotted path."""
    *parents, last = path.split(".")
    for p in parents:
        mod = getattr(mod, p)
    setattr(mod, last, value)


def get_path(mod: Any, path: str) -> Any:
    """``getattr`` along a dotted path."""
    for p in path.split("."):
        mod = getattr(mod, p)
    return mod


def _drop_layers(
    model: nn.Module, container: str, drops: list[int], count_attr: str | None
) -> None:
    layers = model.get_submodule(container)
    assert isinstance(layers, nn.ModuleList)
    kept = [m for i, m in enumerate(layers) if i not in set(drops)]
    parent_name, _, attr = container.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, nn.ModuleList(kept))
    for new_idx, layer in enumerate(kept):
        for sub in layer.modules():  # KV caches index layers by position
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.__dict__["layer_idx"] = new_idx
    if count_attr:
        set_path(model, count_attr, len(kept))
    config: Any = getattr(model, "config", None)
    types = getattr(config, "layer_types", None)
    if config is not None and isinstance(types, list) and len(types) == len(layers):
        config.layer_types = [t for i, t in enumerate(types) if i not in set(drops)]
