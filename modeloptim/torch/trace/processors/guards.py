"""Shape guards: sizes the traced Python code branched on must keep their value."""

from __future__ import annotations

import builtins

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
            is_size = (n.op == "call_method" and n.target in ("size", "dim", "numel")) or (
                n.op == "call_function" and n.target is builtins.getattr
                and n.args[1] == "shape") or (n.op == "call_function" and n.target is builtins.len)
            if is_size:
                lay = ctx.layout(n.args[0])
                if not isinstance(lay, list):
                    continue
                dim = n.args[1] if n.op == "call_method" and n.target == "size" and len(
                    n.args) > 1 else n.kwargs.get("dim")
                dims = list(range(len(lay))) if not isinstance(dim, int) else [dim]
                for d in dims:
                    ctx.atoms.freeze(lay[d], reason)
            else:
                stack.extend(n.all_input_nodes)
        ctx.desc[node] = None
