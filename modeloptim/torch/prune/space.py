"""The pruning search space: groups of tied channels and where each channel lives.

A `SearchSpace` is plain data, so it can be saved in the optimizer state and rebuilt without
tracing the model again. Every searchable channel has a *global id* (group offset + channel
index). Each tensor dim the space touches stores a position map: ``map[p]`` is the global id of
the channel at position ``p``, or ``-1`` for positions that never change (channels of frozen
groups). Several groups can share one dim (a concat), and one channel can occupy several
positions (flatten into a Linear, head blocks). Module attributes that count channels
(``out_features``, ``num_features``, ``normalized_shape``...) are `AttrSpec` trees over such
maps. A subnet is a boolean ``keep`` vector over global ids; `SearchSpace.plan` turns it into a
`PrunePlan` (the positions to keep per tensor dim and the new attribute values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modeloptim.torch.prune.plan import PrunePlan

__all__ = ["AttrSpec", "DepthGroup", "SearchSpace", "SpaceGroup"]


@dataclass
class SpaceGroup:
    """One group of channels that are kept or removed together across layers.

    Attributes:
        name: readable label (the producing layer's symbol).
        size: number of channels.
        offset: global id of channel 0.
        granule: sizes the search may choose are multiples of this (1 for channels).
        kind: ``"channels"``, ``"hidden"``, ``"ffn"``, ``"heads"``... (for configs/reports).
    """

    name: str
    size: int
    offset: int
    granule: int = 1
    kind: str = "channels"


@dataclass
class DepthGroup:
    """Layers of one ``nn.ModuleList`` that may be dropped (depth pruning).

    Attributes:
        container: qualified name of the ``ModuleList``.
        size: number of layers.
        config_attr: attribute path (from the root) holding the layer count, if any.
    """

    container: str
    size: int
    config_attr: str | None = None


@dataclass
class AttrSpec:
    """How a module attribute's value follows the kept channels.

    ``kind`` is ``"count"`` (number of kept positions of ``map``), ``"prod"`` (product of the
    parts), ``"tuple"`` (a tuple of the parts' values) or ``"const"`` (``value``).
    """

    kind: str
    map: torch.Tensor | None = None
    parts: list[AttrSpec] = field(default_factory=list)
    value: int = 0

    def evaluate(self, keep: torch.Tensor) -> Any:
        """The attribute value for global keep vector ``keep`` (bool, ``(num_channels,)``)."""
        if self.kind == "count":
            assert self.map is not None
            return int(_kept(self.map, keep).sum())
        if self.kind == "prod":
            return math.prod(p.evaluate(keep) for p in self.parts)
        if self.kind == "tuple":
            return tuple(p.evaluate(keep) for p in self.parts)
        return self.value

    def to_data(self) -> dict[str, Any]:
        """Plain-data form."""
        return {
            "kind": self.kind,
            "map": self.map,
            "value": self.value,
            "parts": [p.to_data() for p in self.parts],
        }

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> AttrSpec:
        """Inverse of `to_data`."""
        return cls(d["kind"], d["map"], [cls.from_data(p) for p in d["parts"]], d["value"])


def _kept(pos_map: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Bool mask over positions: fixed positions (-1) are always kept.

    ``pos_map`` is ``(positions,)`` or ``(rows, positions)``: a position that belongs to a
    channel of several groups (a product of factors, e.g. grouped-conv groups x channels per
    group) has one row per group and stays only if all its channels stay.
    """
    kept = (pos_map < 0) | keep[pos_map.clamp(min=0)]
    return kept if kept.dim() == 1 else kept.all(0)


@dataclass
class SearchSpace:
    """Searchable groups of a model and the position maps of every tensor dim they span.

    Attributes:
        groups: the channel groups (global ids ``offset .. offset + size``).
        tensors: ``{qualified tensor name: {dim: position maps (int64, (rows, dim_size))}}``;
            one row per group that has channels in the dim.
        attrs: ``{(module name, attribute path): AttrSpec}``.
        depth: droppable layer stacks.
    """

    groups: list[SpaceGroup] = field(default_factory=list)
    tensors: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    attrs: dict[tuple[str, str], AttrSpec] = field(default_factory=dict)
    depth: list[DepthGroup] = field(default_factory=list)

    @property
    def num_channels(self) -> int:
        """Total number of global channel ids."""
        return sum(g.size for g in self.groups)

    def add_group(
        self, name: str, size: int, *, granule: int = 1, kind: str = "channels"
    ) -> SpaceGroup:
        """Append a group and return it (``offset`` assigned here; names made unique)."""
        taken = {g.name for g in self.groups}
        unique, k = name, 1
        while unique in taken:  # factors of one layer's dim share its symbol's label
            k += 1
            unique = f"{name}#{k}"
        g = SpaceGroup(unique, size, self.num_channels, granule, kind)
        self.groups.append(g)
        return g

    def add_map(self, tensor: str, dim: int, pos_map: torch.Tensor) -> None:
        """Record that ``tensor``'s ``dim`` holds global channels ``pos_map`` (-1: fixed).

        Maps of different groups in one dim become rows; the first row is merged into where
        the new map's positions are all still free (concats), a new row is added otherwise.
        """
        dims = self.tensors.setdefault(tensor, {})
        old = dims.get(dim)
        if old is None:
            dims[dim] = pos_map.reshape(1, -1).clone()
            return
        if old.shape[1] != pos_map.numel():
            raise ValueError(
                f"{tensor} dim {dim}: maps of sizes {old.shape[1]} and {pos_map.numel()} disagree"
            )
        new = pos_map >= 0
        for row in old:
            if not bool((row[new] >= 0).any()):
                row[new] = pos_map[new]
                return
        dims[dim] = torch.cat([old, pos_map.reshape(1, -1)])

    def add_layer_attrs(self, model: nn.Module) -> None:
        """Declare ``in/out_features`` of Linear and ``embedding_dim`` of Embedding layers.

        Only layers whose weights the space slices; printed and saved layers then show their
        new sizes.
        """
        for name, mod in model.named_modules():
            maps = self.tensors.get(f"{name}.weight" if name else "weight", {})
            fields: dict[int, str] = {}
            if isinstance(mod, nn.Linear):
                fields = {0: "out_features", 1: "in_features"}
            elif isinstance(mod, nn.Embedding):
                fields = {1: "embedding_dim"}
            for dim, attr in fields.items():
                if dim in maps and (name, attr) not in self.attrs:
                    self.attrs[(name, attr)] = AttrSpec("count", maps[dim])

    def group(self, name: str) -> SpaceGroup:
        """Look a group up by name."""
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no group named {name!r}; groups: {[g.name for g in self.groups][:8]}")

    # -- subnets ------------------------------------------------------------------------------
    def keep_vector(self, keep: Mapping[str, torch.Tensor | list[int]]) -> torch.Tensor:
        """Global bool keep vector from ``{group name: kept channel indices}`` (others full)."""
        vec = torch.ones(self.num_channels, dtype=torch.bool)
        for g in self.groups:
            if g.name in keep:
                idx = torch.as_tensor(keep[g.name], dtype=torch.long).reshape(-1)
                if idx.numel() == 0:
                    raise ValueError(f"keep: group {g.name!r} must keep at least one channel")
                if int(idx.min()) < 0 or int(idx.max()) >= g.size:
                    raise ValueError(
                        f"keep: indices of group {g.name!r} must lie in "
                        f"[0, {g.size}), got {idx.tolist()}"
                    )
                part = torch.zeros(g.size, dtype=torch.bool)
                part[idx] = True
                vec[g.offset : g.offset + g.size] = part
        return vec

    def plan(
        self, keep: torch.Tensor, drop_layers: dict[str, list[int]] | None = None
    ) -> PrunePlan:
        """The physical pruning plan of global keep vector ``keep`` (bool, ``(num_channels,)``).

        Args:
            keep: which global channels stay.
            drop_layers: ``{container: [layer indices to drop]}`` for depth groups.
        """
        if keep.shape != (self.num_channels,):
            raise ValueError(
                f"keep: expected shape ({self.num_channels},), got {tuple(keep.shape)}"
            )
        tensors: dict[str, dict[int, torch.Tensor]] = {}
        for name, dims in self.tensors.items():
            for dim, pos_map in dims.items():
                mask = _kept(pos_map, keep)
                if not bool(mask.all()):
                    tensors.setdefault(name, {})[dim] = mask.nonzero()[:, 0]
        attrs = []
        for (module, attr), spec in self.attrs.items():
            attrs.append((module, attr, spec.evaluate(keep)))
        drops = {k: sorted(v) for k, v in (drop_layers or {}).items() if v}
        cfg = {d.container: d.config_attr for d in self.depth if d.config_attr}
        return PrunePlan(tensors, attrs, drops, {c: cfg[c] for c in drops if c in cfg})

    # -- plain data -----------------------------------------------------------------------------
    def to_data(self) -> dict[str, Any]:
        """Plain-data form (tensors, numbers, strings, lists, dicts)."""
        return {
            "groups": [g.__dict__.copy() for g in self.groups],
            "tensors": {
                n: {str(d): m for d, m in dims.items()} for n, dims in self.tensors.items()
            },
            "attrs": [
                {"module": m, "attr": a, "spec": s.to_data()} for (m, a), s in self.attrs.items()
            ],
            "depth": [d.__dict__.copy() for d in self.depth],
        }

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> SearchSpace:
        """Inverse of `to_data`."""
        return cls(
            [SpaceGroup(**g) for g in d["groups"]],
            {n: {int(k): m for k, m in dims.items()} for n, dims in d["tensors"].items()},
            {(a["module"], a["attr"]): AttrSpec.from_data(a["spec"]) for a in d["attrs"]},
            [DepthGroup(**x) for x in d.get("depth", [])],
        )
