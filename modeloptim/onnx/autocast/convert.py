"""FP16/BF16 conversion of ONNX graphs with measured fp32 fallbacks.

:func:`convert_to_mixed_precision` decides per node (see :mod:`.measure`) whether it can run
in the low-precision type, rewrites the graph accordingly, inserts ``Cast`` nodes where a
tensor crosses between precisions (one per tensor and direction, shared by its consumers),
and reports which nodes stayed fp32 and why. Operator schemas decide which inputs may take
the low type (e.g. ``Resize`` scales stay float32) and which ops cannot (those stay fp32).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from modeloptim.onnx.autocast.measure import capture_all, node_error
from modeloptim.onnx.autocast.precision import LowPrecision
from modeloptim.onnx.ort_utils import float_tensor_names
from modeloptim.onnx.quantization.qdq import node_matches
from modeloptim.onnx.sanitize import default_opset

if TYPE_CHECKING:
    import onnx

_LOG = logging.getLogger(__name__)
_FLOAT = 1
# Nodes that create float values from attributes, or carry subgraphs: left in fp32.
_SOURCE_OPS = frozenset(
    {
        "Constant",
        "ConstantOfShape",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "EyeLike",
        "Multinomial",
    }
)


@dataclass
class AutocastReport:
    """Which nodes were converted, which stayed fp32 (name -> reason), and output error."""

    low_precision_type: str
    output_path: str = ""
    converted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    casts_inserted: int = 0
    output_max_rel_error: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)


def _schema_allows(
    node: onnx.NodeProto, opset: int, precision: LowPrecision, types: dict[str, int] | None = None
):
    """Return (float outputs ok, per-input allowed flags) from the operator schema."""
    from onnx import defs

    try:
        schema = defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:
        return False, []
    constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def allowed(params, idx: int) -> bool:
        if not params:
            return False
        p = params[min(idx, len(params) - 1)]  # variadic: the last formal repeats
        types = constraints.get(p.type_str, {p.type_str})
        return precision.schema_type in types

    outs_ok = all(
        allowed(schema.outputs, i)
        for i, name in enumerate(node.output)
        if name and (types is None or types.get(name) == _FLOAT)
    )
    return outs_ok, [allowed(schema.inputs, i) for i in range(len(node.input))]


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute)


def choose_low_nodes(
    model: onnx.ModelProto,
    precision: LowPrecision,
    feeds: Sequence[dict[str, np.ndarray]],
    report: AutocastReport,
    max_relative_error: float,
    nodes_to_exclude: Sequence[str] | None,
    op_types_to_exclude: Sequence[str] | None,
) -> set[str]:
    """Pick the nodes that run in ``precision`` (fills ``report.kept`` with the others)."""
    from onnx import numpy_helper
    from tqdm.auto import tqdm

    types = float_tensor_names(model)
    opset = default_opset(model)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    candidates = []
    for node in model.graph.node:
        floats = [n for n in list(node.input) + list(node.output) if n and types.get(n) == _FLOAT]
        if not floats:
            continue  # integer/shape logic: untouched
        if node_matches(node, nodes_to_exclude) or node.op_type in (op_types_to_exclude or ()):
            report.kept[node.name] = "excluded by the user"
        elif node.op_type in _SOURCE_OPS or _has_subgraph(node):
            report.kept[node.name] = "creates values from attributes or has subgraphs"
        elif any(o and types.get(o) is None for o in node.output):
            report.kept[node.name] = "output type unknown (shape inference failed)"
        elif not _schema_allows(node, opset, precision, types)[0]:
            report.kept[node.name] = f"operator schema has no {precision.name} output"
        else:
            candidates.append(node)
    produced = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    names = [n for n in types if n in produced and n not in consts]  # no stale value_info
    values = capture_all(model, names, feeds) if feeds else []
    low = set()
    for node in tqdm(candidates, desc=f"autocast {precision.name} check", leave=False):
        peak, rel = node_error(node, values, consts, types, precision, model.opset_import)
        if peak > precision.max_value:
            report.kept[node.name] = (
                f"overflow: |value| reaches {peak:.3g} > {precision.max_value:.5g}"
            )
        elif rel > max_relative_error:
            report.kept[node.name] = f"relative error {rel:.3g} > {max_relative_error:.3g}"
        else:
            low.add(node.name)
    # A node that loses too much from rounded *inputs* needs them produced in fp32: keep the
    # producers of its float inputs in fp32 too (otherwise the loss happens one node earlier).
    producers = {o: n.name for n in model.graph.node for o in n.output}
    for node in candidates:
        if "relative error" not in report.kept.get(node.name, ""):
            continue
        for name in node.input:
            prod = producers.get(name)
            if prod is not None and prod in low and types.get(name) == _FLOAT:
                low.discard(prod)
                report.kept[prod] = f"its output feeds {node.name!r}, which needs fp32 inputs"
    return low


def rewrite_precision(
    model: onnx.ModelProto, low: set[str], precision: LowPrecision, keep_io_types: bool
) -> int:
    """Rewrite ``model`` in place so ``low`` nodes compute in ``precision``; returns #casts."""
    from onnx import helper, numpy_helper

    graph = model.graph
    types = float_tensor_names(model)
    opset = default_opset(model)
    inits = {i.name: i for i in graph.initializer}
    taken = set(types) | {o for n in graph.node for o in n.output}
    home: dict[str, int] = {}  # float tensor -> precision it is produced in
    for inp in graph.input:
        if types.get(inp.name) == _FLOAT:
            home[inp.name] = _FLOAT
            if not keep_io_types:
                inp.type.tensor_type.elem_type = precision.onnx_type
                home[inp.name] = precision.onnx_type
    casts: dict[tuple[str, int], str] = {}
    low_inits: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []
    new_inits = []

    def unique(name: str) -> str:
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    def cast_of(name: str, to: int) -> str:
        if (name, to) not in casts:
            out = unique(f"{name}_cast_{'fp32' if to == _FLOAT else precision.name}")
            new_nodes.append(
                helper.make_node("Cast", [name], [out], name=unique(f"{out}_node"), to=to)
            )
            casts[(name, to)] = out
        return casts[(name, to)]

    for node in list(graph.node):
        is_low = node.name in low
        allowed = _schema_allows(node, opset, precision)[1] if is_low else []
        for i, name in enumerate(node.input):
            if not name or types.get(name) != _FLOAT:
                continue
            want = precision.onnx_type if is_low and i < len(allowed) and allowed[i] else _FLOAT
            if name in inits:
                if want != _FLOAT:
                    if name not in low_inits:
                        arr = numpy_helper.to_array(inits[name]).astype(precision.numpy_dtype())
                        low_inits[name] = unique(f"{name}_{precision.name}")
                        new_inits.append(numpy_helper.from_array(arr, low_inits[name]))
                    node.input[i] = low_inits[name]
                continue
            have = home.get(name, _FLOAT)
            if have != want:
                node.input[i] = cast_of(name, want)
        if is_low:
            if node.op_type == "Cast":
                for attr in node.attribute:
                    if attr.name == "to" and attr.i == _FLOAT:
                        attr.i = precision.onnx_type
            for out in node.output:
                if out and types.get(out) == _FLOAT:
                    home[out] = precision.onnx_type
        new_nodes.append(node)
    for out in graph.output:
        if home.get(out.name, _FLOAT) == _FLOAT:
            continue
        if keep_io_types:
            # The producer writes a renamed low tensor; a Cast restores the fp32 output name.
            renamed = unique(f"{out.name}_{precision.name}")
            for node in new_nodes:
                node.input[:] = [renamed if n == out.name else n for n in node.input]
                node.output[:] = [renamed if n == out.name else n for n in node.output]
            new_nodes.append(
                helper.make_node(
                    "Cast", [renamed], [out.name], name=unique(f"{out.name}_cast"), to=_FLOAT
                )
            )
            casts[(out.name, _FLOAT)] = out.name
        else:
            out.type.tensor_type.elem_type = precision.onnx_type
    del graph.node[:]
    graph.node.extend(
        _toposort(
            new_nodes, {i.name for i in graph.input} | set(inits) | {i.name for i in new_inits}
        )
    )
    graph.initializer.extend(new_inits)
    del graph.value_info[:]
    return len(casts)


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Order nodes so each input is produced before use (Casts were appended out of order)."""
    ready = set(available) | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    outer = set()  # names produced nowhere in this graph (outer scope): treat as available
    produced = {o for n in nodes for o in n.output}
    for n in nodes:
        outer |= {i for i in n.input if i not in produced}
    ready |= outer
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise RuntimeError("autocast: graph has a cycle after rewriting")
        pending = rest
    return ordered
