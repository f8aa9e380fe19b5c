"""The analysis result: symbol states and groups of tied channels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from modeloptim.torch.trace.context import AnalysisContext
from modeloptim.torch.trace.layout import Desc
from modeloptim.torch.trace.symbols import CLType, Symbol, SymState, spec_size, spec_symbols
from modeloptim.torch.trace.tracer import GraphCollection


@dataclass
class GroupMember:
    """One tensor dim whose channels belong to a group.

    Attributes:
        tensor: qualified parameter/buffer name (``"layer1.0.conv1.weight"``).
        dim: the tensor dim.
        module: owning module name.
        symbol: ``"module:symbol"`` when a layer rule declared the dim, else ``None``.
        layout: how the group's channels sit in the dim (``"all 64"``,
            ``"2 segments"``, ``"blocks of 49"``...).
    """

    tensor: str
    dim: int
    module: str
    symbol: str | None
    layout: str


@dataclass
class ChannelGroup:
    """Channels that must be kept or removed together across layers.

    Attributes:
        name: a readable label (the producing layer's symbol when there is one).
        size: number of channels in the group.
        members: the tensor dims the group spans.
        searchable: whether the group may be pruned.
        reasons: why it is frozen (empty when searchable).
        root: internal atom id (used by `prune_group`).

    `size_attrs`, `member_channel_index` and `symbol_channel_index` expose where each channel
    sits, for tools (pruning search spaces) that slice the tensors themselves.
    """

    name: str
    size: int
    members: list[GroupMember]
    searchable: bool
    reasons: list[str] = field(default_factory=list)
    root: int = -1
    _dims: list[tuple[str, int, Desc]] = field(default_factory=list, repr=False)
    _attrs: list[tuple[str, str, Any]] = field(default_factory=list, repr=False)
    _ctx: AnalysisContext | None = field(default=None, repr=False)

    @property
    def layers(self) -> list[str]:
        """Names of the modules with a member, in order."""
        out: list[str] = []
        for m in self.members:
            if m.module not in out:
                out.append(m.module)
        return out

    @property
    def size_attrs(self) -> list[tuple[str, str, Any]]:
        """Module attributes whose value follows the group's size, as ``(module, attr, spec)``.

        ``attr`` is an attribute path of module ``module`` (e.g. ``"out_features"``,
        ``"num_heads"``); ``spec`` is the `Symbol` it equals, a tuple of symbols (their
        product) or a list (a tuple value). Pruning the group rewrites these attributes.
        """
        return list(self._attrs)

    def member_channel_index(self) -> list[tuple[str, int, torch.Tensor]]:
        """For every member ``(tensor, dim, index)``, in the order of `members`.

        ``index`` (int64, shape ``[size of dim]``) gives, for each position along ``dim``,
        the group channel in ``[0, size)`` stored there, or ``-1`` where the position holds
        channels of other groups (e.g. the other half of a concatenation).

        Raises:
            ValueError: the group was not produced by the analysis.
        """
        ctx = self._context()
        return [
            (name, dim, _channel_index(ctx.atoms, desc, self.root, self.size))
            for name, dim, desc in self._dims
        ]

    def symbol_channel_index(self, symbol: Symbol) -> torch.Tensor:
        """Like `member_channel_index` for the dim a size `Symbol` counts.

        Args:
            symbol: a symbol from `size_attrs` specs.

        Returns:
            int64 tensor of shape ``[symbol.size]``: group channel per position, or ``-1``.

        Raises:
            ValueError: the group was not produced by the analysis, or ``symbol`` is not one
                of its analysis' symbols.
        """
        ctx = self._context()
        desc = ctx.sym_desc.get(id(symbol))
        if desc is None:
            raise ValueError(f"symbol: {symbol!r} is not a symbol of this group's analysis")
        return _channel_index(ctx.atoms, desc, self.root, self.size)

    def _context(self) -> AnalysisContext:
        if self._ctx is None:
            raise ValueError(
                f"group: {self.name!r} was not produced by analyze_symbols/dependency_groups"
            )
        return self._ctx

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "name": self.name,
            "size": self.size,
            "searchable": self.searchable,
            "reasons": self.reasons,
            "members": [m.__dict__ for m in self.members],
        }


class AnalysisResult:
    """Queryable outcome of `analyze_symbols`."""

    def __init__(self, ctx: AnalysisContext, gc: GraphCollection) -> None:
        self.ctx = ctx
        self.gc = gc
        self.groups: list[ChannelGroup] = self._build_groups()
        self._set_symbol_states()

    # -- groups ------------------------------------------------------------------------------
    def _build_groups(self) -> list[ChannelGroup]:
        atoms = self.ctx.atoms
        by_root: dict[int, ChannelGroup] = {}
        producers: set[int] = set()
        for rec in self.ctx.tensors.values():
            module = rec.name.rsplit(".", 1)[0] if "." in rec.name else ""
            for dim, desc in enumerate(rec.desc):
                if rec.symbols and dim not in rec.symbols:
                    continue  # kernel dims and the like: constants of their layer
                for leaf in atoms.leaves(desc):
                    if atoms.size[leaf] < 2:
                        continue
                    g = by_root.get(leaf)
                    if g is None:
                        reasons = atoms.reasons(leaf)
                        g = by_root[leaf] = ChannelGroup(
                            "",
                            atoms.size[leaf],
                            [],
                            not reasons,
                            list(reasons),
                            leaf,
                            _ctx=self.ctx,
                        )
                    sym = rec.symbols.get(dim)
                    g.members.append(
                        GroupMember(
                            rec.name,
                            dim,
                            module,
                            sym[0] if sym else None,
                            _describe(atoms, desc, leaf),
                        )
                    )
                    if sym and sym[1] != CLType.INCOMING:
                        producers.add(leaf)
                    g._dims.append((rec.name, dim, desc))
        for sid, (owner, symbol) in self.ctx.sym_owner.items():
            info = self.ctx.sym_map[owner]
            for attr, spec in info.attrs.items():
                if symbol not in spec_symbols(spec):
                    continue
                for leaf in atoms.leaves(self.ctx.sym_desc[sid]):
                    if leaf in by_root and (owner, attr, spec) not in by_root[leaf]._attrs:
                        by_root[leaf]._attrs.append((owner, attr, spec))
        groups = list(by_root.values())
        for g in groups:
            if g.searchable and g.root not in producers:
                g.searchable = False
                g.reasons.append(
                    "no layer produces these channels (only consumers or plain tensors)"
                )
            g.name = _label(g)
        return groups

    @property
    def searchable_groups(self) -> list[ChannelGroup]:
        """Groups that may be pruned."""
        return [g for g in self.groups if g.searchable]

    @property
    def frozen_groups(self) -> list[ChannelGroup]:
        """Groups that must keep their size, each with its reasons."""
        return [g for g in self.groups if not g.searchable]

    # -- symbols -----------------------------------------------------------------------------
    def _set_symbol_states(self) -> None:
        atoms = self.ctx.atoms
        rep: dict[int, Symbol] = {}
        items = list(self.ctx.sym_owner.items())
        order = sorted(
            range(len(items)), key=lambda k: (items[k][1][1].cl_type != CLType.OUTGOING, k)
        )
        for k in order:
            sid, (_owner, sym) = items[k]
            leaves = [a for a in atoms.leaves(self.ctx.sym_desc[sid]) if atoms.size[a] > 1]
            free = [a for a in leaves if not atoms.reasons(a)]
            sym.reasons = [r for a in leaves for r in atoms.reasons(a)]
            if not free:
                sym.state = SymState.CONSTANT
                continue
            parent = next((rep[a] for a in free if a in rep), None)
            if parent is None:
                sym.state = SymState.SEARCHABLE
                for a in free:
                    rep[a] = sym
            else:
                sym.state, sym.parent = SymState.DYNAMIC, parent

    def named_symbols(self) -> Iterator[tuple[str, Symbol]]:
        """All ``("module.symbol", symbol)``."""
        for sid, (owner, sym) in self.ctx.sym_owner.items():
            del sid
            yield (f"{owner}.{sym.name}" if owner else sym.name), sym

    def named_searchable_out_symbols(self) -> Iterator[tuple[str, Symbol]]:
        """Outgoing symbols that represent a searchable group (what pruning varies)."""
        for n, s in self.named_symbols():
            if s.state == SymState.SEARCHABLE and s.cl_type == CLType.OUTGOING:
                yield n, s

    def named_dangling_symbols(self) -> Iterator[tuple[str, Symbol]]:
        """Free module-internal symbols (heads, groups) tied to no other layer."""
        for n, s in self.named_symbols():
            if s.cl_type == CLType.NONE and s.state in (SymState.SEARCHABLE, SymState.DYNAMIC):
                yield n, s

    def named_cross_layer_symbols(self) -> Iterator[tuple[str, Symbol]]:
        """Incoming/outgoing symbols (each tied to the layers of its group)."""
        for n, s in self.named_symbols():
            if s.cl_type != CLType.NONE:
                yield n, s

    def group_of(self, tensor: str, dim: int) -> list[ChannelGroup]:
        """Groups spanning ``tensor``'s ``dim``."""
        return [
            g for g in self.groups if any(m.tensor == tensor and m.dim == dim for m in g.members)
        ]


def _channel_index(atoms: Any, desc: Desc, root: int, n: int) -> torch.Tensor:
    """Channel index of every position of ``desc`` that belongs to group ``root`` (else -1).

    Found with ``ceil(log2 n)`` mask queries: query ``b`` keeps the channels whose bit ``b``
    is set, so the positions it keeps spell out their channel's bits.
    """
    inside = ~atoms.keep_mask(desc, root, torch.zeros(n, dtype=torch.bool))
    ch = torch.zeros(inside.numel(), dtype=torch.long)
    ar = torch.arange(n)
    for b in range(max(1, (n - 1).bit_length())):
        ch |= (atoms.keep_mask(desc, root, ((ar >> b) & 1).bool()) & inside).long() << b
    return torch.where(inside, ch, torch.full_like(ch, -1))


def _describe(atoms: Any, desc: Desc, leaf: int) -> str:
    n = atoms.size[leaf]
    none = atoms.keep_mask(desc, leaf, torch.zeros(n, dtype=torch.bool))
    e0 = torch.zeros(n, dtype=torch.bool)
    e0[0] = True
    ch0 = atoms.keep_mask(desc, leaf, e0) & ~none
    hits, total, rep = int((~none).sum()), none.numel(), int(ch0.sum())
    start = int((~none).nonzero()[0]) if hits else 0
    if rep == 1:
        return f"all {total}" if hits == total else f"{hits} of {total} from offset {start}"
    pos = ch0.nonzero()[:, 0]
    if int(pos[-1] - pos[0]) + 1 == rep:
        return f"{hits} of {total} in blocks of {rep}"
    return f"{hits} of {total}, each channel repeated x{rep} (strided)"


def _label(g: ChannelGroup) -> str:
    named = [(m, m.symbol) for m in g.members if m.symbol]
    m = next((m for m, s in named if s.endswith(":embedding_dim")), None) or next(
        (
            m
            for m, s in named
            if s.split(":")[-1].split(",")[-1].startswith(("out", "nf", "hidden_size"))
        ),
        g.members[0],
    )
    name = m.symbol.replace(":", ".") if m.symbol else f"{m.tensor}[dim {m.dim}]"
    if " in blocks of " in m.layout:  # e.g. whole heads of a projection
        name += f" ({g.size} blocks of {m.layout.rsplit(' ', 1)[1]})"
    elif "repeated" in m.layout:  # e.g. a channel inside every head
        name += f" (factor {g.size}, strided)"
    return name


__all__ = ["AnalysisResult", "ChannelGroup", "GroupMember", "spec_size"]
