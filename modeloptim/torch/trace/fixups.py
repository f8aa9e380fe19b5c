"""Attribute fix-ups for modules whose code reads size attributes (``self.split_size``).

Such attributes can be recomputed from the module's pruned tensors.

``@register_attr_fixup(GPT2Attention, ops=("split",))`` tells the analyzer that literal sizes
passed to ``split`` inside such modules come from attributes the fix-up recomputes, so they
do not freeze the channels; `prune_group` runs the fix-up after slicing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import fx, nn

Fixup = Callable[[Any], None]


@dataclass(frozen=True)
class _Entry:
    fn: Fixup
    ops: frozenset[str]


_FIXUPS: dict[type[nn.Module], _Entry] = {}


def register_attr_fixup(*types: type[nn.Module], ops: tuple[str, ...]) -> Callable[[Fixup], Fixup]:
    """Register ``fn(module)`` recomputing size attributes of ``types`` after pruning.

    Args:
        types: module classes.
        ops: op names (``"split"``, ``"view"``...) whose literal sizes inside these modules
            are attribute-derived and fixed up.
    """

    def deco(fn: Fixup) -> Fixup:
        for t in types:
            _FIXUPS[t] = _Entry(fn, frozenset(ops))
        return fn

    return deco


def literal_is_fixed_up(node: fx.Node, op: str) -> bool:
    """Whether a literal size of ``op`` at ``node`` belongs to a module with a fix-up."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return False
    _, cls = list(stack.values())[-1]
    entry = _FIXUPS.get(cls) if isinstance(cls, type) else None
    return entry is not None and op in entry.ops


def run_fixups(model: nn.Module) -> None:
    """Run every registered fix-up on the modules of ``model``."""
    for m in model.modules():
        entry = _FIXUPS.get(type(m))
        if entry is not None:
            entry.fn(m)
