"""Concatenation and splitting: cat/stack (channel offsets), split/chunk/unbind."""

from __future__ import annotations

import torch
from torch import fx

from modeloptim.torch.trace.context import AnalysisContext
from modeloptim.torch.trace.fixups import literal_is_fixed_up
from modeloptim.torch.trace.layout import Desc
from modeloptim.torch.trace.processors.registry import PROCESSORS, NodeProcessor


def _dim_arg(node: fx.Node, pos: int, default: int = 0) -> int:
    if len(node.args) > pos:
        return int(node.args[pos])  # type: ignore[arg-type]
    return int(node.kwargs.get("dim", node.kwargs.get("axis", default)))  # type: ignore[arg-type]


@PROCESSORS.register(torch.cat, torch.concat, torch.concatenate, torch.stack)
class ConcatProcessor(NodeProcessor):
    """``cat``/``stack``: joined layouts.

    ``cat``: the joined dim is the inputs' layouts one after another (DenseNet, Inception);
    all other dims are tied. ``stack`` adds a new dim and ties all others.
    """

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Build the output layout from the inputs."""
        tensors = node.args[0] if node.args else node.kwargs["tensors"]
        lays = [ctx.layout(t) for t in tensors]  # type: ignore[union-attr]
        out = ctx.value(node)
        if any(not isinstance(lay, list) for lay in lays) or not lays:
            ctx.boundary(node, "concatenating tensors without layout")
            return
        stack = node.target is torch.stack
        dim = _dim_arg(node, 1) % out.dim()
        ref = lays[0]
        res: list[Desc] = []
        for k in range(out.dim()):
            if stack and k == dim:
                res.append(ctx.atoms.new_desc(out.shape[k], f"stack count at {node.name}"))
                continue
            j = k - 1 if stack and k > dim else k
            if not stack and k == dim:
                res.append([seg for lay in lays for seg in lay[j]])
                continue
            for lay in lays[1:]:
                ctx.unify(ref[j], lay[j], node)
            res.append(ref[j])
        ctx.desc[node] = res


@PROCESSORS.register(
    "split",
    "chunk",
    "tensor_split",
    "unbind",
    "split_with_sizes",
    torch.split,
    torch.chunk,
    torch.tensor_split,
    torch.unbind,
)
class SplitProcessor(NodeProcessor):
    """``split``/``chunk``: consecutive pieces of the split dim's layout.

    SwiGLU's ``gate, up = x.chunk(2, -1)`` splits one Linear's outputs into two halves.
    """

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Each output gets its piece of the split dim and the input's other dims."""
        lay, x, outs = ctx.layout(node.args[0]), ctx.value(node.args[0]), ctx.value(node)
        name = node.target if isinstance(node.target, str) else node.target.__name__
        if not isinstance(lay, list):
            ctx.boundary(node, "splitting a tensor without layout")
            return
        if name == "unbind":
            dim = _dim_arg(node, 1) % x.dim()
            ctx.atoms.freeze(lay[dim], f"unbind at {node.name}")
            ctx.desc[node] = tuple([*lay[:dim], *lay[dim + 1 :]] for _ in outs)
            return
        dim = _dim_arg(node, 2)
        dim %= x.dim()
        sizes = [o.shape[dim] for o in outs]
        pieces = ctx.atoms.split(lay[dim], sizes) if sum(sizes) == x.shape[dim] else None
        if pieces is None:
            ctx.boundary(node, "split does not cover the dim")
            return
        size_arg = (
            node.args[1]
            if len(node.args) > 1
            else node.kwargs.get(
                "split_size_or_sections", node.kwargs.get("split_size", node.kwargs.get("chunks"))
            )
        )
        by_count = name in ("chunk", "tensor_split") or isinstance(ctx.value(size_arg), int)
        literal = (
            name in ("split", "split_with_sizes")
            and not _all_derived(ctx.is_derived(size_arg))
            and not literal_is_fixed_up(node, "split")
        )
        if literal or not by_count or len(set(sizes)) != 1:
            # explicit piece sizes (or a hard-coded piece size) pin the whole dim
            ctx.atoms.freeze(lay[dim], f"split into fixed sizes at {node.name}")
        else:
            # equal pieces (chunk(n), split(total // n)): only pruning every piece the same
            # way keeps them equal, so the pieces are tied to each other
            for p in pieces[1:]:
                ctx.unify(pieces[0], p, node)
        ctx.desc[node] = tuple([*lay[:dim], p, *lay[dim + 1 :]] for p in pieces)


def _all_derived(flags: object) -> bool:
    if isinstance(flags, tuple | list):
        return all(_all_derived(f) for f in flags)
    return bool(flags)
