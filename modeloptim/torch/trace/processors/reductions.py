"""Reductions, pooling, matmul-like contractions and functional layers."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from modeloptim.torch.trace.context import AnalysisContext
from modeloptim.torch.trace.layout import Desc
from modeloptim.torch.trace.processors.registry import PROCESSORS, NodeProcessor

_REDUCE = (
    "mean",
    "sum",
    "amax",
    "amin",
    "max",
    "min",
    "prod",
    "std",
    "var",
    "norm",
    "logsumexp",
    "argmax",
    "argmin",
    "all",
    "any",
    "cumsum",
    torch.mean,
    torch.sum,
    torch.amax,
    torch.amin,
    torch.max,
    torch.min,
    torch.prod,
    torch.std,
    torch.var,
    torch.norm,
    torch.logsumexp,
    torch.argmax,
    torch.argmin,
    torch.all,
    torch.any,
    torch.cumsum,
)


@PROCESSORS.register(*_REDUCE)
class ReduceProcessor(NodeProcessor):
    """Reductions over dims (``mean(-1, keepdim=True)``, global pooling ``mean((2, 3))``).

    Reduced dims vanish (or become 1), the others keep their layout.
    """

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Drop the reduced dims from the layout."""
        src = node.args[0]
        lay, x, out = ctx.layout(src), ctx.value(src), ctx.value(node)
        first = out[0] if isinstance(out, tuple) else out
        if not isinstance(lay, list) or not isinstance(first, torch.Tensor):
            ctx.boundary(node, "reduction without layout")
            return
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if isinstance(dim, fx.Node) or (
            dim is not None and not isinstance(dim, int | tuple | list)
        ):
            ctx.boundary(node, "reduction over a computed dim")
            return
        dims = (
            set(range(x.dim()))
            if dim is None
            else {d % x.dim() for d in (dim if isinstance(dim, tuple | list) else [dim])}
        )
        if str(node.target) == "cumsum" or getattr(node.target, "__name__", "") == "cumsum":
            dims = set()
        keep = [lay[k] if k not in dims else ctx.atoms.new_desc(1) for k in range(x.dim())]
        kept = keep if first.dim() == x.dim() else [lay[k] for k in range(x.dim()) if k not in dims]
        if len(kept) != first.dim():
            ctx.boundary(node, "reduction with unexpected output rank")
            return
        ctx.desc[node] = tuple(kept for _ in out) if isinstance(out, tuple) else kept


_POOL_FUNCS = (
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    F.interpolate,
    F.pad,
    F.lp_pool2d,
    F.pixel_shuffle,
)
_POOL_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Upsample,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.ConstantPad1d,
    nn.ZeroPad1d,
)


@PROCESSORS.register(*_POOL_FUNCS, *_POOL_MODULES)
class PoolProcessor(NodeProcessor):
    """Pooling/resizing/padding: batch and channel dims pass, spatial dims are new atoms."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Keep leading dims; give changed spatial dims fresh atoms."""
        lay, x, out = ctx.layout(node.args[0]), ctx.value(node.args[0]), ctx.value(node)
        if isinstance(out, tuple):  # max pool with indices
            out = out[0]
        if not isinstance(lay, list) or out.dim() != x.dim():
            ctx.boundary(node, "pooling changed the rank")
            return
        if node.target is F.pixel_shuffle:
            ctx.boundary(node, "pixel shuffle mixes channels into space")
            return
        if x.dim() < 3 or x.shape[1] != out.shape[1]:
            ctx.boundary(node, "padding/pooling changed the channel dim")
            return
        why = f"spatial size set by {node.name}"
        res = [
            lay[k] if k < 2 or x.shape[k] == out.shape[k] else ctx.atoms.new_desc(out.shape[k], why)
            for k in range(x.dim())
        ]
        for k in range(2, x.dim()):
            if x.shape[k] != out.shape[k]:  # e.g. F.pad of a feature dim: keep it fixed
                ctx.atoms.freeze(lay[k], why)
        ctx.desc[node] = res if not isinstance(ctx.value(node), tuple) else (res, res)


@PROCESSORS.register(
    torch.matmul, torch.bmm, torch.mm, "matmul", "bmm", "mm", operator.matmul, "__matmul__"
)
class MatmulProcessor(NodeProcessor):
    """``a @ b``: a's last dim ties b's second-to-last; batch dims broadcast."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Contract and broadcast."""
        a, b = node.args[0], node.args[1]
        la, lb, va, vb = ctx.layout(a), ctx.layout(b), ctx.value(a), ctx.value(b)
        out = ctx.value(node)
        if not (isinstance(la, list) and isinstance(lb, list)) or va.dim() < 2 or vb.dim() < 2:
            ctx.boundary(node, "matmul of vectors")
            return
        ctx.unify(la[-1], lb[-2], node)
        batch: list[Desc] = []
        for k in range(3, out.dim() + 1):
            dims = [
                lay[-k]
                for lay, v in ((la, va), (lb, vb))
                if v.dim() >= k and v.shape[-k] == out.shape[-k]
            ]
            for d in dims[1:]:
                ctx.unify(dims[0], d, node)
            batch.insert(0, dims[0] if dims else ctx.atoms.new_desc(out.shape[-k]))
        ctx.desc[node] = [*batch, la[-2], lb[-1]]


@PROCESSORS.register(torch.ops.aten.linear.default, F.linear)
class LinearFunctionProcessor(NodeProcessor):
    """``F.linear(x, w, b)``: x's last dim ties w's dim 1; output last dim is w's dim 0."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Tie operands."""
        x, w = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
        b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        lx, lw = ctx.layout(x), ctx.layout(w)
        ctx.unify(lx[-1], lw[1], node)
        if isinstance(b, fx.Node):
            ctx.unify(ctx.layout(b)[0], lw[0], node)
        ctx.desc[node] = [*lx[:-1], lw[0]]


@PROCESSORS.register(F.embedding)
class EmbeddingFunctionProcessor(NodeProcessor):
    """``F.embedding(ids, w)``: output = ids' dims + w's last dim; the vocab dim is frozen."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Index rows of the table."""
        ids, w = node.args[0], node.args[1]
        lw = ctx.layout(w)
        ctx.atoms.freeze(lw[0], f"embedding table rows indexed by ids at {node.name}")
        ctx.desc[node] = [*ctx.layout(ids), lw[-1]]


@PROCESSORS.register(F.scaled_dot_product_attention)
class SdpaProcessor(NodeProcessor):
    """``sdpa(q, k, v)``: q/k feature dims tie, k/v sequence dims tie, output = (.., L, Ev)."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Tie q, k, v; GQA head dims are frozen unless they match."""
        q, k, v = node.args[:3]
        lq, lk, lv = ctx.layout(q), ctx.layout(k), ctx.layout(v)
        vq, vk, vv = ctx.value(q), ctx.value(k), ctx.value(v)
        ctx.unify(lq[-1], lk[-1], node)
        ctx.unify(lk[-2], lv[-2], node)
        batch = []
        for j in range(vq.dim() - 2):
            if vq.shape[j] == vk.shape[j] == vv.shape[j]:
                ctx.unify(lq[j], lk[j], node)
                ctx.unify(lk[j], lv[j], node)
            else:
                ctx.freeze([*lq[j], *lk[j], *lv[j]], f"grouped-query heads at {node.name}")
            batch.append(lq[j])
        for a in node.all_input_nodes[3:]:
            ctx.freeze(ctx.layout(a), f"attention mask at {node.name}")
        ctx.desc[node] = [*batch, lq[-2], lv[-1]]


@PROCESSORS.register(F.layer_norm, F.group_norm, F.rms_norm)
class NormFunctionProcessor(NodeProcessor):
    """Functional norms: their normalized shape / group count is a literal: freeze."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Output keeps the input layout; weights tie the normalized dims but are frozen."""
        lay = ctx.layout(node.args[0])
        why = f"functional norm with a fixed shape at {node.name}"
        for a in node.all_input_nodes:
            ctx.freeze(ctx.layout(a), why)
        ctx.desc[node] = lay


@PROCESSORS.register(torch.einsum)
class EinsumProcessor(NodeProcessor):
    """``einsum``: operand dims sharing a letter are tied; output dims take their letter's."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Tie by subscript letters (equations with ``...`` are a boundary)."""
        eq = str(node.args[0]).replace(" ", "")
        ops = (
            list(node.args[1])
            if len(node.args) == 2 and isinstance(node.args[1], list | tuple)
            else list(node.args[1:])
        )
        lhs, _, rhs = eq.partition("->")
        terms = lhs.split(",")
        lays = [ctx.layout(o) for o in ops]
        if (
            "." in eq
            or len(terms) != len(ops)
            or any(
                not isinstance(lay, list) or len(lay) != len(t)
                for lay, t in zip(lays, terms, strict=False)
            )
        ):
            ctx.boundary(node, "einsum with ellipsis or unexpected operands")
            return
        letter: dict[str, Desc] = {}
        for lay, term, op in zip(lays, terms, ops, strict=True):
            shape = ctx.value(op).shape
            for k, ch in enumerate(term):
                if shape[k] == 1:
                    continue  # broadcast
                if ch in letter:
                    ctx.unify(letter[ch], lay[k], node)
                else:
                    letter[ch] = lay[k]
        if not rhs and "->" not in eq:
            rhs = "".join(sorted(c for c in set(lhs) - {","} if lhs.count(c) == 1))
        out = ctx.value(node)
        ctx.desc[node] = [
            letter.get(ch) or ctx.atoms.new_desc(out.shape[k]) for k, ch in enumerate(rhs)
        ]
