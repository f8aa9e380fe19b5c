"""State shared by the node processors while one model is analyzed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from modeloptim.torch.trace.layout import AtomTable, Desc, LayoutConflictError
from modeloptim.torch.trace.symbols import CLType, Symbol, SymMap

# A tensor's layout: one Desc per dim. Node layouts mirror the value: tensors -> TDesc,
# tuples/lists -> tuples of layouts, anything else -> None.
TDesc = list[Desc]


@dataclass
class TensorRecord:
    """A parameter or buffer seen by the analysis."""

    name: str
    tensor: torch.Tensor
    desc: TDesc
    symbols: dict[int, tuple[str, CLType]] = field(default_factory=dict)  # dim -> (name, type)


class AnalysisContext:
    """Atoms, node layouts and values of the graph being analyzed.

    Args:
        model: the model being analyzed.
        sym_map: `SymInfo` of registered modules.
    """

    def __init__(self, model: nn.Module, sym_map: SymMap) -> None:
        self.model = model
        self.sym_map = sym_map
        self.atoms = AtomTable()
        self.tensors: dict[int, TensorRecord] = {}
        self.sym_desc: dict[int, Desc] = {}
        self.sym_owner: dict[int, tuple[str, Symbol]] = {}
        self._tensor_names: dict[int, str] = {}
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            self._tensor_names.setdefault(id(t), name)
        # per graph
        self.gm: fx.GraphModule | None = None
        self.prefix = ""
        self.leaf_root = False
        self.desc: dict[fx.Node, Any] = {}
        self.val: dict[fx.Node, Any] = {}
        self.derived: dict[fx.Node, Any] = {}

    # -- graph switching ---------------------------------------------------------------------
    def begin_graph(
        self, gm: fx.GraphModule, prefix: str, values: dict[fx.Node, Any], leaf_root: bool = False
    ) -> None:
        """Start a new graph (its node values come from shape propagation)."""
        self.gm, self.prefix, self.val = gm, prefix, values
        self.leaf_root = leaf_root
        self.desc, self.derived = {}, {}

    def qualname(self, target: str) -> str:
        """Model-level name of a graph target."""
        if self.leaf_root and target == "leaf":
            return self.prefix
        return f"{self.prefix}.{target}" if self.prefix else target

    def module(self, target: str) -> nn.Module:
        """The module a ``call_module`` target names."""
        assert self.gm is not None
        return self.gm.get_submodule(target)

    # -- values and layouts ------------------------------------------------------------------
    def value(self, a: Any) -> Any:
        """Concrete (shape-propagated) value of an argument."""
        return self.val.get(a) if isinstance(a, fx.Node) else a

    def layout(self, a: Any) -> Any:
        """Layout of an argument (``None`` for literals)."""
        return self.desc.get(a) if isinstance(a, fx.Node) else None

    def fresh(self, value: Any, reason: str | None = None) -> Any:
        """New layout for ``value`` (frozen with ``reason`` if given)."""
        if isinstance(value, torch.Tensor):
            return [self.atoms.new_desc(s, reason) for s in value.shape]
        if isinstance(value, tuple | list) and not isinstance(value, torch.Size):
            return tuple(self.fresh(v, reason) for v in value)
        return None

    def freeze(self, layout: Any, reason: str) -> None:
        """Freeze every atom of a layout."""
        for d in iter_descs(layout):
            self.atoms.freeze(d, reason)

    def unify(self, d1: Desc, d2: Desc, node: fx.Node | str) -> None:
        """Tie two dim layouts; on a layout conflict freeze both (with the reason)."""
        try:
            self.atoms.unify(d1, d2)
        except LayoutConflictError as err:
            where = str(node.format_node()) if isinstance(node, fx.Node) else node
            reason = f"incompatible channel layouts ({err}) at {_short(where)}"
            self.atoms.freeze(d1, reason)
            self.atoms.freeze(d2, reason)

    def boundary(self, node: fx.Node, why: str) -> None:
        """Freeze everything ``node`` touches and give its output fresh frozen atoms."""
        reason = f"{why}: {_short(str(node.format_node()))}"
        for a in node.all_input_nodes:
            self.freeze(self.desc.get(a), reason)
        self.desc[node] = self.fresh(self.val.get(node), reason)

    # -- parameters --------------------------------------------------------------------------
    def tensor_layout(self, t: torch.Tensor, fallback_name: str) -> TDesc:
        """Layout of a parameter/buffer (one per tensor object, so tied weights share it)."""
        rec = self.tensors.get(id(t))
        if rec is None:
            name = self._tensor_names.get(id(t))
            desc = [self.atoms.new_desc(s) for s in t.shape]
            if name is None:  # a constant made by the traced code, not a model tensor
                for d in desc:
                    self.atoms.freeze(d, f"constant tensor {fallback_name}")
                name = fallback_name
            rec = self.tensors[id(t)] = TensorRecord(name, t, desc)
        return rec.desc

    def symbol_desc(self, owner: str, sym: Symbol) -> Desc:
        """The atoms of a module symbol (created once)."""
        d = self.sym_desc.get(id(sym))
        if d is None:
            d = self.sym_desc[id(sym)] = self.atoms.new_desc(sym.size, None)
            self.sym_owner[id(sym)] = (owner, sym)
            if sym.constant_reason:
                self.atoms.freeze(d, f"{owner}.{sym.name}: {sym.constant_reason}")
        return d

    # -- derived ints (shape arithmetic) -----------------------------------------------------
    def is_derived(self, a: Any) -> Any:
        """Whether an int argument is computed from tensor sizes (per element for tuples)."""
        if isinstance(a, fx.Node):
            return self.derived.get(a, False)
        if isinstance(a, tuple | list):
            return tuple(self.is_derived(x) for x in a)
        return False


def iter_descs(layout: Any) -> list[Desc]:
    """All dim layouts inside a (nested) node layout."""
    if layout is None:
        return []
    if isinstance(layout, list):  # TDesc
        return list(layout)
    out: list[Desc] = []
    for sub in layout:
        out.extend(iter_descs(sub))
    return out


def _short(text: str) -> str:
    return text if len(text) <= 160 else text[:157] + "..."


def flat_args(node: fx.Node) -> list[Any]:
    """Positional then keyword arguments of a node, flattened one level."""
    return [*node.args, *node.kwargs.values()]


Processor = Callable[[AnalysisContext, fx.Node], None]
