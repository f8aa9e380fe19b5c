"""Output Q/DQ placement so that runtimes fuse whole ``DQ -> op -> Q`` node units.

onnxruntime (and TensorRT) do not run a QDQ graph as written: they look for node units,
``DequantizeLinear`` on every input, the op, and ``QuantizeLinear`` on its output, and replace
each unit with an integer kernel (``QLinearConv``, ``QLinearMatMul``, ...). A Conv whose
output stays float keeps running in float32 on dequantized inputs, which is slower than the
original model. :func:`add_output_qdq` therefore quantizes the output of every quantized
op whose runtime kernel needs it (:data:`OUTPUT_RULES`), after the activations that the
runtime folds into the QuantizeLinear:

* ``Relu`` and ``Clip`` (``Conv -> Relu -> Q``): onnxruntime drops them when the Q range lies
  inside the activation's range, i.e. with asymmetric (``uint8``) activations whose zero
  point sits at the range minimum. With symmetric ``int8`` the Q goes before them.
* Anything else (HardSwish, Sigmoid, ``Mul``...) stays float between a DQ and the next Q.

The quantized tensor gets one shared Q/DQ pair for all its readers (fan-out). Residual
``Add``s are not quantized unless ``Add`` is among the op types to quantize.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from modeloptim.onnx.quantization.qdq import QdqPlan

if TYPE_CHECKING:
    import onnx

OutputRule = Callable[["onnx.NodeProto"], bool]


class OutputRules:
    """op type -> whether its output needs a QuantizeLinear for the runtime to fuse it."""

    def __init__(self) -> None:
        self._rules: dict[str, OutputRule] = {}

    def register(self, *op_types: str) -> Callable[[OutputRule], OutputRule]:
        """Decorator registering a rule for ``op_types``."""

        def deco(fn: OutputRule) -> OutputRule:
            for op in op_types:
                self._rules[op] = fn
            return fn

        return deco

    def needs_output_q(self, node: onnx.NodeProto) -> bool:
        """True if ``node``'s quantized kernel needs its output quantized."""
        rule = self._rules.get(node.op_type)
        return bool(rule and rule(node))


OUTPUT_RULES = OutputRules()


@OUTPUT_RULES.register("Conv")
def _conv_needs_q(node: onnx.NodeProto) -> bool:
    # onnxruntime: DQ -> Conv -> Q becomes QLinearConv; without the Q the Conv stays float.
    # MatMul/Gemm need none: DQ -> MatMul becomes MatMulIntegerToFloat, DQ -> Gemm QGemm.
    return True


# Activations that onnxruntime removes in front of a QuantizeLinear whose range they contain.
FOLDABLE_ACTIVATIONS = frozenset({"Relu", "Clip"})


def add_output_qdq(
    model: onnx.ModelProto, plan: QdqPlan, fold_activations: bool = True
) -> list[str]:
    """Add the outputs of quantized ops that need them to ``plan.activations``.

    Args:
        model: the model the plan is for (not modified).
        plan: the plan from :func:`~modeloptim.onnx.quantization.qdq.plan_qdq` (updated).
        fold_activations: quantize after ``Relu``/``Clip`` instead of before (only valid
            with asymmetric activations, whose range can start at 0).

    Returns:
        The tensors added (graph outputs are left float).
    """
    graph = model.graph
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for idx, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, idx))
    graph_outputs = {o.name for o in graph.output}
    nodes = {n.name: n for n in graph.node}
    added: list[str] = []
    for name in plan.nodes:
        node = nodes[name]
        if not OUTPUT_RULES.needs_output_q(node) or not node.output:
            continue
        tensor = node.output[0]
        while fold_activations and tensor not in graph_outputs:
            readers = consumers.get(tensor, [])
            if len(readers) != 1 or readers[0][0].op_type not in FOLDABLE_ACTIVATIONS:
                break
            tensor = readers[0][0].output[0]
        if tensor in graph_outputs or not consumers.get(tensor):
            continue
        uses = plan.activations.setdefault(tensor, [])
        known = {(n.name, i) for n, i in uses}
        uses.extend(u for u in consumers[tensor] if (u[0].name, u[1]) not in known)
        added.append(tensor)
    return added


RangeRule = Callable[["onnx.NodeProto", dict[str, float]], tuple[float, float]]


class ReaderRanges:
    """op type -> the input range outside which the op's output no longer changes.

    A tensor read only by such ops can be quantized over the intersection of its calibrated
    range with the union of these ranges at no cost: e.g. HardSwish is 0 below -3, so the
    Q in front of it need not spend levels on ``[-100, -3]``.
    """

    def __init__(self) -> None:
        self._rules: dict[str, RangeRule] = {}

    def register(self, *op_types: str) -> Callable[[RangeRule], RangeRule]:
        """Decorator registering a rule for ``op_types``."""

        def deco(fn: RangeRule) -> RangeRule:
            for op in op_types:
                self._rules[op] = fn
            return fn

        return deco

    def live_range(
        self, node: onnx.NodeProto, consts: dict[str, float]
    ) -> tuple[float, float] | None:
        """Input range that reaches ``node``'s output, or None if unknown / unbounded."""
        rule = self._rules.get(node.op_type)
        return rule(node, consts) if rule and not node.domain else None


READER_RANGES = ReaderRanges()
_INF = float("inf")


@READER_RANGES.register("HardSwish")
def _hardswish_range(node, consts) -> tuple[float, float]:
    return -3.0, _INF


@READER_RANGES.register("Relu")
def _relu_range(node, consts) -> tuple[float, float]:
    return 0.0, _INF


@READER_RANGES.register("HardSigmoid")
def _hardsigmoid_range(node, consts) -> tuple[float, float]:
    attrs = {a.name: a.f for a in node.attribute}
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    if alpha <= 0:
        return -_INF, _INF
    return -beta / alpha, (1.0 - beta) / alpha


@READER_RANGES.register("Clip")
def _clip_range(node, consts) -> tuple[float, float]:
    lo = consts.get(node.input[1], -_INF) if len(node.input) > 1 and node.input[1] else -_INF
    hi = consts.get(node.input[2], _INF) if len(node.input) > 2 and node.input[2] else _INF
    return lo, hi


def narrow_ranges(
    model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """Intersect each calibrated range with what its readers can see (:data:`READER_RANGES`).

    Only tensors that every reader clamps (and that are not graph outputs) change.
    """
    from onnx import numpy_helper

    graph = model.graph
    consts = {
        i.name: float(numpy_helper.to_array(i).reshape(-1)[0])
        for i in graph.initializer
        if np_size(i) == 1
    }
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    out = dict(ranges)
    for tensor, (lo, hi) in ranges.items():
        nodes = readers.get(tensor, [])
        if tensor in outputs or not nodes:
            continue
        live = [READER_RANGES.live_range(n, consts) for n in nodes]
        if any(r is None for r in live):
            continue
        need_lo = min(r[0] for r in live if r is not None)
        need_hi = max(r[1] for r in live if r is not None)
        new_lo, new_hi = max(lo, need_lo), min(hi, need_hi)
        if new_lo < new_hi:
            out[tensor] = (new_lo, new_hi)
    return out


def np_size(tensor: onnx.TensorProto) -> int:
    """Number of elements of an initializer."""
    size = 1
    for d in tensor.dims:
        size *= d
    return size
