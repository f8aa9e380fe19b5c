"""Shape guards: sizes the traced Python code branched on must keep their value."""

from __future__ import annotations

import builtins
import operator

import torch
from torch import fx

from modeloptim.torch.trace.context import AnalysisContext
from modeloptim.torch.trace.processors.registry import PROCESSORS, NodeProcessor
from modeloptim.torch.trace.shadow import shape_guard


@PROCESSORS.register(shape_guard)
class ShapeGuardProcessor(NodeProcessor):
    """Freeze every tensor dim whose size flows into a specialized Python decision."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Walk back through size arithmetic to the ``size()``/``.shape`` queries."""
        reason = f"its size decides Python control flow (guard {node.name})"
        stack, seen = list(node.all_input_nodes), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if isinstance(ctx.value(n), torch.Tensor):
                continue
            picked = _picked_dim(ctx, n)
            if picked is not None:  # x.shape[i]: only dim i matters
                lay, d = picked
                ctx.atoms.freeze(lay[d], reason)
                continue
            is_size = (
                (n.op == "call_method" and n.target in ("size", "dim", "numel"))
                or (
                    n.op == "call_function"
                    and n.target is builtins.getattr
                    and n.args[1] == "shape"
                )
                or (n.op == "call_function" and n.target is builtins.len)
            )
            if is_size:
                lay = ctx.layout(n.args[0])
                if not isinstance(lay, list):
                    continue
                dim = (
                    n.args[1]
                    if n.op == "call_method" and n.target == "size" and len(n.args) > 1
                    else n.kwargs.get("dim")
                )
                dims = list(range(len(lay))) if not isinstance(dim, int) else [dim]
                for d in dims:
                    ctx.atoms.freeze(lay[d], reason)
            else:
                stack.extend(n.all_input_nodes)
        ctx.desc[node] = None


def _is_shape_query(n: fx.Node) -> bool:
    return (n.op == "call_method" and n.target == "size" and len(n.args) == 1 and not n.kwargs) or (
        n.op == "call_function" and n.target is builtins.getattr and n.args[1] == "shape"
    )


def _picked_dim(ctx: AnalysisContext, n: fx.Node) -> tuple[list, int] | None:
    """``(layout, dim)`` when ``n`` is ``x.shape[i]`` / ``x.size()[i]`` / ``x.size(i)``."""
    src: object = None
    idx: object = None
    if (
        n.op == "call_function"
        and n.target is operator.getitem
        and isinstance(n.args[0], fx.Node)
        and _is_shape_query(n.args[0])
    ):
        src, idx = n.args[0].args[0], n.args[1]
    elif n.op == "call_method" and n.target == "size" and len(n.args) == 2:
        src, idx = n.args[0], n.args[1]
    lay = ctx.layout(src)
    if isinstance(idx, int) and isinstance(lay, list) and -len(lay) <= idx < len(lay):
        return lay, idx
    return None
