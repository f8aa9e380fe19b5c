"""Leaf modules with a `SymInfo` rule: bind their symbols to parameters, inputs, outputs."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import fx, nn

from modeloptim.torch.trace.context import AnalysisContext, TDesc
from modeloptim.torch.trace.layout import Desc
from modeloptim.torch.trace.symbols import CLType, Symbol, SymInfo, spec_symbols


def get_path(obj: Any, path: str) -> Any:
    """``getattr`` through dots (``"out_proj.weight"``); ``None`` when missing."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def spec_desc(ctx: AnalysisContext, owner: str, spec: Any) -> Desc:
    """Layout of a rule spec (symbol, product tuple, or list of products)."""
    if isinstance(spec, Symbol):
        return ctx.symbol_desc(owner, spec)
    if isinstance(spec, tuple):
        return [tuple(a for s in spec for a in ctx.symbol_desc(owner, s)[0])]
    return [seg for part in spec for seg in spec_desc(ctx, owner, part)]


def _at(layout: Any, path: tuple[int, ...]) -> Any:
    for p in path:
        if not isinstance(layout, tuple) or p >= len(layout):
            return None
        layout = layout[p]
    return layout


class ModuleRuleProcessor:
    """Applies a module's `SymInfo` at its ``call_module`` node."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Tie the module's tensors, inputs and outputs to its symbols."""
        mod = ctx.module(str(node.target))
        owner = ctx.qualname(str(node.target))
        info = ctx.sym_map[mod]
        self._tensors(ctx, node, mod, owner, info)
        bound = inspect.signature(mod.forward).bind(*node.args, **node.kwargs)
        primary: TDesc | None = None
        primary_declared: set[int] = set()
        for name, arg in bound.arguments.items():
            lay = ctx.layout(arg)
            if name in info.inputs and isinstance(lay, list):
                for dim, spec in info.inputs[name].items():
                    ctx.unify(lay[dim], spec_desc(ctx, owner, spec), node)
                if primary is None:
                    primary = lay
                    primary_declared = {d % len(lay) for d in info.inputs[name]}
            elif lay is not None:
                ctx.freeze(
                    lay,
                    f"input '{name}' of {owner} ({type(mod).__name__}) is not "
                    "described by its rule",
                )
        out = ctx.value(node)
        layout = ctx.fresh(out)
        for path, dims in info.outputs.items():
            sub = _at(layout, path) if path else layout
            if not isinstance(sub, list):
                continue
            for dim, spec in dims.items():
                ctx.unify(sub[dim], spec_desc(ctx, owner, spec), node)
            declared = {d % len(sub) for d in dims}
            for k in range(len(sub)):
                if k in declared:
                    continue
                same = (
                    primary is not None
                    and len(primary) == len(sub)
                    and k not in primary_declared
                    and ctx.atoms.desc_size(primary[k]) == ctx.atoms.desc_size(sub[k])
                )
                if same:
                    sub[k] = primary[k]  # type: ignore[index]
                else:
                    ctx.atoms.freeze(sub[k], f"dim {k} of the output of {owner}")
        for path in _paths(layout):
            if path not in info.outputs and path != ():
                ctx.freeze(_at(layout, path), f"output {path} of {owner}")
        if () not in info.outputs and isinstance(layout, list):
            ctx.freeze(layout, f"output of {owner}")
        ctx.desc[node] = layout

    @staticmethod
    def _tensors(
        ctx: AnalysisContext, node: fx.Node, mod: nn.Module, owner: str, info: SymInfo
    ) -> None:
        declared: set[int] = set()
        for tname, dims in info.tensors.items():
            t = get_path(mod, tname)
            if not isinstance(t, torch.Tensor):
                continue
            td = ctx.tensor_layout(t, f"{owner}.{tname}")
            rec = ctx.tensors[id(t)]
            for dim, spec in dims.items():
                ctx.unify(td[dim], spec_desc(ctx, owner, spec), node)
                syms = spec_symbols(spec)
                names = ",".join(s.name for s in syms if s.size > 1 or len(syms) == 1)
                cl = (
                    CLType.OUTGOING
                    if any(s.cl_type == CLType.OUTGOING for s in syms)
                    else syms[-1].cl_type
                )
                rec.symbols[dim] = (f"{owner}:{names}", cl)
            for d in range(t.dim()):
                if d not in dims:
                    ctx.atoms.freeze(td[d], f"{owner}.{tname} dim {d} is not a symbol")
            declared.add(id(t))
        for pname, p in [*mod.named_parameters(), *mod.named_buffers()]:
            if id(p) not in declared:
                ctx.freeze(
                    ctx.tensor_layout(p, f"{owner}.{pname}"),
                    f"{owner}.{pname} is not described by the rule of {type(mod).__name__}",
                )


def _paths(layout: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if isinstance(layout, tuple):
        out: list[tuple[int, ...]] = []
        for k, sub in enumerate(layout):
            out.extend(_paths(sub, (*prefix, k)))
        return out
    return [prefix] if isinstance(layout, list) else []
