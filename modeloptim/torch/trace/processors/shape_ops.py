"""Shape ops: reshape/view/flatten, permute/transpose, expand/repeat, indexing, size()."""

from __future__ import annotations

import builtins
import math
import operator
from typing import Any

import torch
from torch import fx, nn

from modeloptim.torch.trace.context import AnalysisContext
from modeloptim.torch.trace.layout import Desc, LayoutConflictError
from modeloptim.torch.trace.processors.registry import PROCESSORS, NodeProcessor


def _dim_groups(ins: list[int], outs: list[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input dims with runs of output dims of equal product (size-1 skipped)."""
    i_idx = [k for k, s in enumerate(ins) if s != 1]
    o_idx = [k for k, s in enumerate(outs) if s != 1]
    groups: list[tuple[list[int], list[int]]] = []
    i = o = 0
    while i < len(i_idx) and o < len(o_idx):
        gi, go = [i_idx[i]], [o_idx[o]]
        pi, po = ins[i_idx[i]], outs[o_idx[o]]
        i, o = i + 1, o + 1
        while pi != po:
            if pi < po and i < len(i_idx):
                pi *= ins[i_idx[i]]
                gi.append(i_idx[i])
                i += 1
            elif po < pi and o < len(o_idx):
                po *= outs[o_idx[o]]
                go.append(o_idx[o])
                o += 1
            else:
                return None
        groups.append((gi, go))
    return groups if i == len(i_idx) and o == len(o_idx) else None


def _shape_flags(ctx: AnalysisContext, node: fx.Node, ndim: int) -> list[bool]:
    """Per output dim: True when its size comes from tensor sizes (or -1), not a literal."""
    if node.op == "call_module":
        mod = ctx.module(str(node.target))
        if isinstance(mod, nn.Unflatten):  # sizes are module attributes: literals
            n = len(mod.unflattened_size)
            at = mod.dim % (ndim - n + 1)
            return [True] * at + [False] * n + [True] * (ndim - at - n)
        return [True] * ndim
    name = str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")
    if name not in ("view", "reshape", "unflatten"):
        return [True] * ndim
    if name == "unflatten":
        dim: Any = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        sizes = node.args[2] if len(node.args) > 2 else node.kwargs.get("sizes", ())
        flags = _flags_of(ctx, sizes)
        dim = int(dim) % (ndim - len(flags) + 1)
        return [True] * dim + flags + [True] * (ndim - dim - len(flags))
    rest = list(node.args[1:]) or [node.kwargs.get("shape", node.kwargs.get("size"))]
    spec: Any = rest[0] if len(rest) == 1 else rest
    flags = _flags_of(ctx, spec)
    return flags if len(flags) == ndim else [True] * ndim


def _flags_of(ctx: AnalysisContext, spec: Any) -> list[bool]:
    if isinstance(spec, fx.Node):
        d = ctx.is_derived(spec)
        val = ctx.value(spec)
        if isinstance(val, tuple | list | torch.Size):
            return list(d) if isinstance(d, tuple) else [bool(d)] * len(val)
        return [bool(d)]
    if isinstance(spec, tuple | list):
        out: list[bool] = []
        for s in spec:
            out.extend(_flags_of(ctx, s) if isinstance(s, fx.Node) else [s == -1])
        return out
    return [spec == -1]


@PROCESSORS.register(
    "view",
    "reshape",
    "flatten",
    "unflatten",
    "squeeze",
    "unsqueeze",
    "view_as",
    "reshape_as",
    torch.reshape,
    torch.flatten,
    torch.unflatten,
    torch.squeeze,
    torch.unsqueeze,
    nn.Flatten,
    nn.Unflatten,
)
class ReshapeProcessor(NodeProcessor):
    """Reshapes: merged dims multiply layouts, split dims factor them.

    Flatten (C, H, W) -> C*H*W keeps each channel as a block of H*W features; a view of
    hidden into (heads, head_dim) factors the hidden atoms.
    """

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Map dims group by group; literal target sizes freeze the dims they fix."""
        src = node.args[0]
        lay, x, out = ctx.layout(src), ctx.value(src), ctx.value(node)
        groups = _dim_groups(list(x.shape), list(out.shape))
        if groups is None or not isinstance(lay, list):
            ctx.boundary(node, "reshape with unrelated shapes")
            return
        res: list[Desc | None] = [None] * out.dim()
        try:
            for gi, go in groups:
                combined = self._merge(ctx, [lay[k] for k in gi])
                parts = (
                    [combined]
                    if len(go) == 1
                    else ctx.atoms.factor(combined, [out.shape[k] for k in go])
                )
                for k, p in zip(go, parts, strict=True):
                    res[k] = p
        except LayoutConflictError as err:
            ctx.boundary(node, f"reshape mixes channel layouts ({err})")
            return
        final = [
            d if d is not None else ctx.atoms.new_desc(out.shape[k]) for k, d in enumerate(res)
        ]
        for k, ok in enumerate(_shape_flags(ctx, node, out.dim())):
            if not ok and out.shape[k] > 1:
                ctx.atoms.freeze(
                    final[k],
                    f"reshaped to hard-coded size {out.shape[k]} at "
                    f"{node.name} ({str(node.format_node())[:120]})",
                )
        if str(node.target) in ("view_as", "reshape_as"):
            other = ctx.layout(node.args[1])
            for k in range(out.dim()):
                ctx.unify(final[k], other[k], node)
        ctx.desc[node] = final

    @staticmethod
    def _merge(ctx: AnalysisContext, descs: list[Desc]) -> Desc:
        if len(descs) == 1:
            return descs[0]
        inner: list[int] = []
        for d in descs[1:]:
            norm = ctx.atoms.normalize(d)
            if len(norm) != 1:
                raise LayoutConflictError("an inner merged dim is a concatenation")
            inner.extend(norm[0])
        return [(*seg, *inner) for seg in descs[0]]


_PERMUTES = (
    "permute",
    "transpose",
    "t",
    "movedim",
    "moveaxis",
    "swapaxes",
    "swapdims",
    torch.permute,
    torch.transpose,
    torch.t,
    torch.movedim,
    torch.moveaxis,
    torch.swapaxes,
    torch.swapdims,
)


@PROCESSORS.register(*_PERMUTES)
class PermuteProcessor(NodeProcessor):
    """Dim reorders: the permutation is read off a probe tensor with distinct dim sizes."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Reorder the input's dim layouts."""
        lay = ctx.layout(node.args[0])
        n = len(lay)
        probe = torch.empty([k + 2 for k in range(n)], device="meta")
        fn = getattr(torch.Tensor, node.target) if isinstance(node.target, str) else node.target
        args = [ctx.value(a) for a in node.args[1:]]
        kwargs = {k: ctx.value(v) for k, v in node.kwargs.items()}
        shape = fn(probe, *args, **kwargs).shape
        ctx.desc[node] = [lay[s - 2] for s in shape]


@PROCESSORS.register("expand", "expand_as", "repeat", "broadcast_to", torch.broadcast_to)
class ExpandProcessor(NodeProcessor):
    """Broadcast copies: expanded dims are new atoms (frozen when the size is a literal)."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Keep non-expanded dims; new/expanded dims get fresh atoms."""
        src = node.args[0]
        lay, x, out = ctx.layout(src), ctx.value(src), ctx.value(node)
        name = str(node.target) if node.op == "call_method" else "broadcast_to"
        other = ctx.layout(node.args[1]) if name == "expand_as" else None
        flags = (
            [True] * out.dim()
            if other is not None
            else _flags_of(ctx, node.args[1] if len(node.args) == 2 else list(node.args[1:]))
        )
        if len(flags) != out.dim():
            flags = [False] * out.dim()
        lead = out.dim() - x.dim()
        res: list[Desc] = []
        for k in range(out.dim()):
            size, j = out.shape[k], k - lead
            if name == "repeat" and j >= 0:
                reps = size // x.shape[j]
                if reps == 1:
                    res.append(lay[j])
                    continue
                norm = ctx.atoms.normalize(lay[j])
                if len(norm) != 1:
                    ctx.boundary(node, "repeat of a concatenated dim")
                    return
                r = ctx.atoms.new(reps, None if flags[k] else f"repeated {reps}x at {node.name}")
                res.append([(r, *norm[0])])
            elif j >= 0 and x.shape[j] == size:
                res.append(lay[j])
            else:
                why = None if flags[k] else f"expanded to hard-coded size {size} at {node.name}"
                res.append(ctx.atoms.new_desc(size, why))
        if other is not None:
            for k in range(out.dim()):
                ctx.unify(res[k], other[k], node)
        ctx.desc[node] = res


@PROCESSORS.register(operator.getitem)
class GetitemProcessor(NodeProcessor):
    """``x[i]`` on tuples (module outputs, split results) and on tensors (basic indexing)."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Pick the element's layout, or index the tensor's dims."""
        src, idx = node.args
        val, lay = ctx.value(src), ctx.layout(src)
        if not isinstance(val, torch.Tensor):
            self._container(ctx, node, val, lay, idx)
            return
        if not isinstance(lay, list):
            ctx.boundary(node, "indexing a tensor without layout")
            return
        items = [_resolve(ctx, i) for i in (list(idx) if isinstance(idx, tuple) else [idx])]
        if self._leading_index(ctx, node, lay, items):
            return
        if any(
            isinstance(i, fx.Node | list | torch.Tensor) or i is True or i is False for i in items
        ):
            ctx.boundary(node, "advanced (tensor) indexing")
            return
        n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
        if Ellipsis in items:
            e = items.index(Ellipsis)
            items = items[:e] + [slice(None)] * (val.dim() - n_real) + items[e + 1 :]
        items += [slice(None)] * (val.dim() - sum(1 for i in items if i is not None))
        res: list[Desc] = []
        d = 0
        for it in items:
            if it is None:
                res.append(ctx.atoms.new_desc(1))
                continue
            size = val.shape[d]
            if isinstance(it, int):
                ctx.atoms.freeze(lay[d], f"indexed by x[{it}] at {node.name}")
            elif isinstance(it, slice):
                start, stop, step = it.indices(size)
                if (start, stop, step) == (0, size, 1):
                    res.append(lay[d])
                else:
                    why = f"sliced {it.start}:{it.stop}:{it.step} at {node.name}"
                    ctx.atoms.freeze(lay[d], why)
                    res.append(ctx.atoms.new_desc(len(range(start, stop, step)), why))
            d += 1
        ctx.desc[node] = res

    @staticmethod
    def _leading_index(ctx: AnalysisContext, node: fx.Node, lay: list, items: list) -> bool:
        """``table[idx]`` (one index tensor on dim 0): rows are gathered, other dims pass."""
        head, rest = items[0], items[1:]
        if not (isinstance(head, fx.Node) and isinstance(ctx.value(head), torch.Tensor)):
            return False
        if any(not (isinstance(r, slice) and r == slice(None)) for r in rest):
            return False
        ilay = ctx.layout(head)
        if not isinstance(ilay, list) or ctx.value(head).dtype == torch.bool:
            return False
        ctx.atoms.freeze(lay[0], f"rows gathered by an index tensor at {node.name}")
        ctx.desc[node] = [*ilay, *lay[1:]]
        return True

    @staticmethod
    def _container(ctx: AnalysisContext, node: fx.Node, val: Any, lay: Any, idx: Any) -> None:
        derived = ctx.is_derived(node.args[0])
        if isinstance(derived, tuple) and isinstance(idx, int | slice):
            ctx.derived[node] = derived[idx]
        elif isinstance(val, torch.Size):
            ctx.derived[node] = True
        if isinstance(lay, tuple) and isinstance(idx, int | slice):
            sub = lay[idx]
            ctx.desc[node] = sub if isinstance(idx, int) else tuple(sub)
        else:
            ctx.desc[node] = None if lay is None else ctx.fresh(ctx.value(node), "unknown item")


def _resolve(ctx: AnalysisContext, item: Any) -> Any:
    """Replace size-derived nodes in an index by their example ints."""
    if isinstance(item, slice):
        return slice(*(_resolve(ctx, v) for v in (item.start, item.stop, item.step)))
    if isinstance(item, fx.Node):
        v = ctx.value(item)
        return v if isinstance(v, int) else item
    return item


@PROCESSORS.register("size", "dim", "numel", "ndimension", "nelement", torch.numel, builtins.len)
class SizeProcessor(NodeProcessor):
    """``x.size()`` / ``x.shape`` queries: Python ints derived from sizes (follow pruning)."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Mark the result as size-derived."""
        val = ctx.value(node)
        ctx.desc[node] = None
        ctx.derived[node] = (True,) * len(val) if isinstance(val, tuple | list) else True


@PROCESSORS.register(builtins.getattr)
class GetattrProcessor(NodeProcessor):
    """``x.shape``, ``x.dtype``, ``x.T`` and friends."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Dispatch on the attribute name."""
        attr = node.args[1]
        val = ctx.value(node)
        if attr in ("shape",):
            SizeProcessor()(ctx, node)
        elif attr in ("T", "mT") and isinstance(val, torch.Tensor):
            lay = ctx.layout(node.args[0])
            ctx.desc[node] = lay[::-1] if attr == "T" else [*lay[:-2], lay[-1], lay[-2]]
        elif isinstance(val, torch.Tensor):
            ctx.boundary(node, f"tensor attribute .{attr}")
        else:
            ctx.desc[node] = None
            ctx.derived[node] = False


def prod(xs: list[int]) -> int:
    """Product of ints."""
    return math.prod(xs)
