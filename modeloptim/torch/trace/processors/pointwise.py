"""Elementwise ops: unary (same layout) and n-ary with broadcasting (residuals, gates)."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from modeloptim.torch.trace.context import AnalysisContext
from modeloptim.torch.trace.processors.registry import PROCESSORS, NodeProcessor

_UNARY_NAMES = (
    "relu",
    "relu_",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "neg",
    "abs",
    "sqrt",
    "rsqrt",
    "sin",
    "cos",
    "erf",
    "reciprocal",
    "square",
    "sign",
    "floor",
    "ceil",
    "round",
    "float",
    "half",
    "bfloat16",
    "double",
    "to",
    "type",
    "type_as",
    "contiguous",
    "clone",
    "detach",
    "requires_grad_",
    "softmax",
    "log_softmax",
    "clamp",
    "clamp_",
    "clip",
    "sigmoid_",
    "tanh_",
    "exp_",
    "hardtanh",
    "hardswish",
    "hardsigmoid",
    "leaky_relu",
    "elu",
    "mish",
    "softplus",
    "relu6",
    "dropout",
    "cpu",
    "cuda",
    "bool",
    "long",
    "int",
    "logical_not",
    "isnan",
    "isinf",
    "nan_to_num",
    "pow_",
    "mul_scalar",
    "fill_",
    "zero_",
    "normalize",
)
_UNARY_FUNCS = (
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.exp,
    torch.log,
    torch.neg,
    torch.abs,
    torch.sqrt,
    torch.rsqrt,
    torch.sin,
    torch.cos,
    torch.erf,
    torch.softmax,
    torch.log_softmax,
    torch.clamp,
    torch.clip,
    torch.square,
    torch.reciprocal,
    torch.sign,
    torch.nan_to_num,
    torch.logical_not,
    torch.isnan,
    torch.isinf,
    torch.clone,
    torch.detach,
    F.relu,
    F.relu_,
    F.gelu,
    F.silu,
    F.mish,
    F.softplus,
    F.elu,
    F.leaky_relu,
    F.hardtanh,
    F.hardswish,
    F.hardsigmoid,
    F.relu6,
    F.sigmoid,
    F.tanh,
    F.softmax,
    F.log_softmax,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.normalize,
    operator.neg,
    operator.pos,
    operator.invert,
    torch.zeros_like,
    torch.ones_like,
    torch.empty_like,
    torch.full_like,
    torch.rand_like,
    torch.randn_like,
)
_UNARY_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmax2d,
    nn.PReLU,
)
_IGNORE_OTHER_TENSORS = {"to", "type_as", "type"}


@PROCESSORS.register(*_UNARY_NAMES, *_UNARY_FUNCS, *_UNARY_MODULES)
class UnaryProcessor(NodeProcessor):
    """Ops whose output has the input's shape and channels (activations, casts, softmax)."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Output layout = first tensor argument's layout (when shapes agree)."""
        src = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
        lay, out = ctx.layout(src), ctx.value(node)
        if (
            isinstance(out, torch.Tensor)
            and isinstance(lay, list)
            and len(lay) == out.dim()
            and tuple(ctx.value(src).shape) == tuple(out.shape)
        ):
            ctx.desc[node] = lay
            # the other tensor args of e.g. clamp(min=t) broadcast like a binary op
            if str(node.target) not in _IGNORE_OTHER_TENSORS and any(
                isinstance(ctx.value(a), torch.Tensor) for a in node.all_input_nodes[1:]
            ):
                BroadcastProcessor()(ctx, node)
            return
        ctx.boundary(node, "unary op changed the shape")


_BINARY_NAMES = (
    "add",
    "add_",
    "sub",
    "sub_",
    "mul",
    "mul_",
    "div",
    "div_",
    "pow",
    "maximum",
    "minimum",
    "where",
    "masked_fill",
    "masked_fill_",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "lerp",
    "addcmul",
    "addcdiv",
    "floor_divide",
    "remainder",
    "fmod",
    "logical_and",
    "logical_or",
    "__and__",
    "__or__",
    "expm1",
    "rsub",
    "copy_",
    "true_divide",
    "atan2",
    "hypot",
)
_BINARY_FUNCS = (
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.pow,
    operator.mod,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.and_,
    operator.or_,
    operator.xor,
    operator.eq,
    operator.ne,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.pow,
    torch.maximum,
    torch.minimum,
    torch.where,
    torch.masked_fill,
    torch.lerp,
    torch.addcmul,
    torch.addcdiv,
    torch.eq,
    torch.ne,
    torch.lt,
    torch.gt,
    torch.le,
    torch.ge,
    torch.logical_and,
    torch.logical_or,
    torch.floor_divide,
    torch.remainder,
    torch.fmod,
    torch.true_divide,
    torch.rsub,
    torch.atan2,
)


@PROCESSORS.register(*_BINARY_NAMES, *_BINARY_FUNCS)
class BroadcastProcessor(NodeProcessor):
    """Elementwise ops with broadcasting: non-broadcast dims aligned from the right are tied."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Tie every operand dim of the output's size; output takes the first one's layout."""
        out = ctx.value(node)
        if not isinstance(out, torch.Tensor):
            _scalar(ctx, node)
            return
        operands = [a for a in node.all_input_nodes if isinstance(ctx.value(a), torch.Tensor)]
        result: list = []
        for k in range(1, out.dim() + 1):
            size = out.shape[-k]
            dims = [
                ctx.desc[a][-k]
                for a in operands
                if ctx.value(a).dim() >= k
                and ctx.value(a).shape[-k] == size
                and isinstance(ctx.desc.get(a), list)
            ]
            if not dims:
                result.append(ctx.atoms.new_desc(size, f"created by broadcasting at {node.name}"))
                continue
            for d in dims[1:]:
                ctx.unify(dims[0], d, node)
            result.append(dims[0])
        ctx.desc[node] = result[::-1]


def _scalar(ctx: AnalysisContext, node: fx.Node) -> None:
    """Arithmetic on Python numbers (shape arithmetic): track whether it depends on sizes."""
    derived = any(bool(_any(ctx.is_derived(a))) for a in node.args)
    out = ctx.value(node)
    if isinstance(out, tuple | list):
        if node.target is operator.add and len(node.args) == 2:
            a, b = (ctx.is_derived(x) for x in node.args)
            ctx.derived[node] = _as_tuple(a, len(ctx.value(node.args[0]))) + _as_tuple(
                b, len(ctx.value(node.args[1]))
            )
        else:
            ctx.derived[node] = (derived,) * len(out)
    else:
        ctx.derived[node] = derived
    ctx.desc[node] = None
    if any(isinstance(ctx.value(a), torch.Tensor) for a in node.all_input_nodes):
        ctx.boundary(node, "tensor reduced to a Python value")


def _any(x: object) -> bool:
    if isinstance(x, tuple | list):
        return any(_any(v) for v in x)
    return bool(x)


def _as_tuple(x: object, n: int) -> tuple[bool, ...]:
    if isinstance(x, tuple):
        return tuple(bool(_any(v)) for v in x)
    return (bool(x),) * n
