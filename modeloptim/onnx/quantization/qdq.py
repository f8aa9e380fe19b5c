"""QuantizeLinear/DequantizeLinear placement for INT8 and FP8 post-training quantization.

Placement follows what a TensorRT-style backend fuses: the *inputs* of compute ops (Conv,
ConvTranspose, Gemm, MatMul, and any other op type the user lists) get a Q/DQ pair (the
outputs that a runtime needs quantized to fuse ``DQ -> op -> Q`` are added by
:mod:`modeloptim.onnx.quantization.placement`); weights
are stored already quantized (per output channel) behind a DequantizeLinear only; a tensor
read by several quantized ops gets one shared Q/DQ pair (fan-out); residual ``Add`` inputs
are only quantized when ``Add`` is asked for explicitly. Which inputs of an op are
activations and which are weights (with their channel axis) is declared per op type in
:data:`INPUT_RULES`, the extension point for new ops.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from modeloptim.onnx.quantization.formats import QuantFormat

if TYPE_CHECKING:
    import onnx

DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class InputRole:
    """How one input of a node is quantized: as activation, or as a weight with ``axis``."""

    index: int
    weight: bool = False
    axis: int | None = None  # per-channel axis of a weight; None = per-tensor


RuleFn = Callable[["onnx.NodeProto", Sequence[bool], Sequence[int]], list[InputRole]]


class InputRules:
    """op type -> function deciding which inputs are activations / weights."""

    def __init__(self, default: RuleFn) -> None:
        self._rules: dict[str, RuleFn] = {}
        self._default = default

    def register(self, *op_types: str) -> Callable[[RuleFn], RuleFn]:
        """Decorator registering a rule for ``op_types``."""

        def deco(fn: RuleFn) -> RuleFn:
            for op in op_types:
                self._rules[op] = fn
            return fn

        return deco

    def roles(
        self, node: onnx.NodeProto, is_const: Sequence[bool], ranks: Sequence[int]
    ) -> list[InputRole]:
        """Roles of ``node``'s inputs given which are constants and their ranks."""
        return self._rules.get(node.op_type, self._default)(node, is_const, ranks)


def _first_input_only(node, is_const, ranks) -> list[InputRole]:
    return [] if not node.input or is_const[0] else [InputRole(0)]


INPUT_RULES = InputRules(_first_input_only)


@INPUT_RULES.register("Conv")
def _conv(node, is_const, ranks) -> list[InputRole]:
    roles = [] if is_const[0] else [InputRole(0)]
    if len(node.input) > 1 and is_const[1]:
        roles.append(InputRole(1, weight=True, axis=0))
    return roles


@INPUT_RULES.register("ConvTranspose")
def _conv_transpose(node, is_const, ranks) -> list[InputRole]:
    roles = [] if is_const[0] else [InputRole(0)]
    if len(node.input) > 1 and is_const[1]:
        roles.append(InputRole(1, weight=True, axis=1))  # weight is (C_in, C_out/g, k...)
    return roles


@INPUT_RULES.register("Gemm")
def _gemm(node, is_const, ranks) -> list[InputRole]:
    attrs = {a.name: a.i for a in node.attribute}
    roles = []
    for idx, trans in ((0, attrs.get("transA", 0)), (1, attrs.get("transB", 0))):
        if not is_const[idx]:
            roles.append(InputRole(idx))
        elif idx == 1:
            roles.append(InputRole(1, weight=True, axis=0 if trans else 1))
        else:
            roles.append(InputRole(0, weight=True, axis=None))
        del trans
    return roles


@INPUT_RULES.register("MatMul")
def _matmul(node, is_const, ranks) -> list[InputRole]:
    roles = []
    for idx in (0, 1):
        if not is_const[idx]:
            roles.append(InputRole(idx))
        elif idx == 1 and ranks[1] >= 2:
            roles.append(InputRole(1, weight=True, axis=ranks[1] - 1))  # per output column
        else:
            roles.append(InputRole(idx, weight=True, axis=None))
    return roles


@INPUT_RULES.register("Add", "Sub", "Mul", "Div", "Concat", "Sum", "Max", "Min")
def _all_activations(node, is_const, ranks) -> list[InputRole]:
    return [InputRole(i) for i, c in enumerate(is_const) if node.input[i] and not c]


@dataclass
class QdqReport:
    """What the QDQ pass did."""

    quantized_nodes: list[str] = field(default_factory=list)
    activation_tensors: list[str] = field(default_factory=list)
    weight_tensors: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def node_matches(node: onnx.NodeProto, patterns: Iterable[str] | None) -> bool:
    """True if the node's name matches any pattern (exact, shell wildcard, or regex)."""
    for pat in patterns or ():
        if node.name == pat or fnmatch.fnmatchcase(node.name, pat):
            return True
        try:
            if re.fullmatch(pat, node.name):
                return True
        except re.error:
            continue
    return False


@dataclass
class QdqPlan:
    """Which (node, input) pairs get activation Q/DQ and which get weight DQ."""

    activations: dict[str, list[tuple[onnx.NodeProto, int]]] = field(default_factory=dict)
    weights: list[tuple[onnx.NodeProto, int, int | None]] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)

    def activation_names(self) -> list[str]:
        """Tensors that need calibration."""
        return list(self.activations)


def plan_qdq(
    model: onnx.ModelProto,
    op_types: Sequence[str],
    nodes_to_exclude: Sequence[str] | None,
    tensor_types: dict[str, int],
    report: QdqReport,
    disable_mha_qdq: bool = False,
) -> QdqPlan:
    """Decide Q/DQ placement (no graph change).

    With ``disable_mha_qdq``, MatMuls whose two inputs are both activations (attention
    ``Q @ K^T`` and ``softmax @ V``) stay float.
    """
    inits = {i.name: i for i in model.graph.initializer}
    plan = QdqPlan()
    for node in model.graph.node:
        if node.op_type not in op_types or node.domain not in ("", "ai.onnx"):
            continue
        if node_matches(node, nodes_to_exclude):
            report.skipped[node.name] = "excluded by nodes_to_exclude"
            continue
        is_const = [name in inits for name in node.input]
        if disable_mha_qdq and node.op_type == "MatMul" and not any(is_const[:2]):
            report.skipped[node.name] = "activation x activation MatMul (disable_mha_qdq)"
            continue
        ranks = [len(inits[n].dims) if n in inits else -1 for n in node.input]
        roles = INPUT_RULES.roles(node, is_const, ranks)
        used = False
        for role in roles:
            name = node.input[role.index]
            dtype = inits[name].data_type if name in inits else tensor_types.get(name)
            if dtype != _FLOAT:
                report.skipped.setdefault(node.name, f"input {name!r} is not float32")
                continue
            used = True
            if role.weight:
                plan.weights.append((node, role.index, role.axis))
            else:
                plan.activations.setdefault(name, []).append((node, role.index))
        if used:
            plan.nodes.append(node.name)
    return plan


def _unique(name: str, taken: set[str]) -> str:
    out = name
    while out in taken:
        out += "_"
    taken.add(out)
    return out


def quantize_weight(
    weight: np.ndarray, fmt: QuantFormat, axis: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel (or per-tensor) quantization of a weight.

    Args:
        weight: float array of any rank.
        fmt: target format.
        axis: channel axis, or ``None`` for one scale.

    Returns:
        ``(q, scale)``: ``q`` has ``weight``'s shape and the format's dtype; ``scale`` has shape
        ``(weight.shape[axis],)`` or ``()``.
    """
    w = weight.astype(np.float32)
    if axis is None:
        scale = fmt.scale_from_amax(float(np.max(np.abs(w))) if w.size else 0.0)
        return fmt.quantize(w, scale), scale
    axis = axis % w.ndim
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=reduce_axes) if reduce_axes else np.abs(w)
    scale = fmt.scale_from_amax(amax)
    shape = [1] * w.ndim
    shape[axis] = -1
    return fmt.quantize(w, scale.reshape(shape)), scale


def apply_qdq(
    model: onnx.ModelProto,
    plan: QdqPlan,
    amax: dict[str, float],
    fmt: QuantFormat,
    report: QdqReport,
    qparams: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> None:
    """Insert the planned Q/DQ nodes into ``model`` (in place).

    Activation scales come from ``qparams`` (tensor -> ``(scale, zero_point)`` 0-d arrays,
    see :mod:`modeloptim.onnx.quantization.activation`) when given, else symmetric from
    ``amax`` in ``fmt``.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    taken = {o for n in graph.node for o in n.output} | set(inits)
    taken |= {i.name for i in graph.input}
    new_inits: list[onnx.TensorProto] = []
    # New nodes go right before the first consumer so the graph stays topologically sorted.
    before: dict[int, list[onnx.NodeProto]] = {}
    position = {n.name: i for i, n in enumerate(graph.node)}

    def zero_point(name: str, shape: tuple[int, ...]) -> str:
        zp_name = _unique(f"{name}_zero_point", taken)
        zp = np.zeros(shape, dtype=np.float32)
        new_inits.append(numpy_helper.from_array(fmt.cast(zp), zp_name))
        return zp_name

    for tensor, uses in plan.activations.items():
        peak = amax.get(tensor)
        if peak is None or not np.isfinite(peak) or (qparams is not None and tensor not in qparams):
            for node, _ in uses:
                report.skipped.setdefault(node.name, f"no calibration range for {tensor!r}")
            continue
        scale_name = _unique(f"{tensor}_scale", taken)
        if qparams is None:
            new_inits.append(
                numpy_helper.from_array(fmt.scale_from_amax(peak).reshape(()), scale_name)
            )
            zp_name = zero_point(tensor, ())
        else:
            scale, zp = qparams[tensor]
            new_inits.append(numpy_helper.from_array(scale.reshape(()), scale_name))
            zp_name = _unique(f"{tensor}_zero_point", taken)
            new_inits.append(numpy_helper.from_array(zp.reshape(()), zp_name))
        q_out, dq_out = _unique(f"{tensor}_quantized", taken), _unique(f"{tensor}_dq", taken)
        q = helper.make_node(
            "QuantizeLinear",
            [tensor, scale_name, zp_name],
            [q_out],
            name=_unique(f"{tensor}_Q", taken),
        )
        dq = helper.make_node(
            "DequantizeLinear",
            [q_out, scale_name, zp_name],
            [dq_out],
            name=_unique(f"{tensor}_DQ", taken),
        )
        first = min(position[node.name] for node, _ in uses)
        before.setdefault(first, []).extend([q, dq])
        for node, idx in uses:
            node.input[idx] = dq_out
        report.activation_tensors.append(tensor)

    shared: dict[tuple[str, int | None], str] = {}
    for node, idx, axis in plan.weights:
        name = node.input[idx]
        key = (name, axis)
        if key not in shared:
            w = numpy_helper.to_array(inits[name])
            wq, scale = quantize_weight(w, fmt, axis)
            q_name = _unique(f"{name}_quantized", taken)
            s_name = _unique(f"{name}_scale", taken)
            new_inits.append(numpy_helper.from_array(wq, q_name))
            new_inits.append(numpy_helper.from_array(scale, s_name))
            zp_name = zero_point(name, scale.shape)
            attrs: dict[str, Any] = {} if axis is None else {"axis": axis % w.ndim}
            dq_out = _unique(f"{name}_dq", taken)
            dq = helper.make_node(
                "DequantizeLinear",
                [q_name, s_name, zp_name],
                [dq_out],
                name=_unique(f"{name}_DQ", taken),
                **attrs,
            )
            before.setdefault(position[node.name], []).append(dq)
            shared[key] = dq_out
            report.weight_tensors.append(name)
        node.input[idx] = shared[key]

    nodes = list(graph.node)
    ordered = []
    for i, node in enumerate(nodes):
        ordered.extend(before.get(i, []))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(new_inits)
    report.quantized_nodes = [n for n in plan.nodes if n not in report.skipped]
