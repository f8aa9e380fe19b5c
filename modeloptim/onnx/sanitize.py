"""Graph sanitizer shared by ONNX quantization and autocast.

Exporters disagree on how they write the same model: paddle2onnx stores weights as
``Constant`` nodes, PyTorch writes transposed weights behind ``Transpose`` nodes, old
exporters list initializers as graph inputs and use opsets that lack per-channel or
low-precision QuantizeLinear. :func:`sanitize` brings all of them to one form:

1. initializers listed as graph inputs are removed from the inputs (they are constants),
2. main-graph ``Constant`` nodes become initializers,
3. weight paths (deterministic nodes whose inputs are all constants) are folded,
4. ``BatchNormalization`` after a ``Conv`` with constant weights is folded into the Conv,
5. the default-domain opset is raised to ``min_opset`` if asked,
6. shapes and types are inferred so later passes can read every tensor's dtype.

Subgraphs (``If``/``Loop``/``Scan`` bodies) are never edited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

_LOG = logging.getLogger(__name__)

# Deterministic ops that exporters put on weight paths; folding them exposes the weight
# (e.g. ``MatMul(x, Transpose(W))``) to the quantizer. Never QuantizeLinear/DequantizeLinear:
# those carry the quantization itself.
FOLDABLE_OPS = frozenset(
    {
        "Identity",
        "Cast",
        "Transpose",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Concat",
        "Slice",
        "Gather",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Neg",
        "Sqrt",
        "Reciprocal",
        "Pow",
        "Expand",
        "Tile",
        "Shape",
        "Size",
        "ConstantOfShape",
        "Range",
        "Equal",
        "Where",
        "Not",
        "Abs",
        "Exp",
        "Log",
        "Clip",
        "Min",
        "Max",
    }
)
# Folding must not blow a tiny constant up into a huge one (Expand/Tile/ConstantOfShape).
_MAX_FOLDED_ELEMENTS = 1 << 24


@dataclass
class SanitizeReport:
    """What :func:`sanitize` changed, for logs and CLI reports."""

    constants_to_initializers: int = 0
    folded_nodes: int = 0
    folded_batchnorms: int = 0
    opset_from: int = 0
    opset_to: int = 0
    notes: list[str] = field(default_factory=list)


def default_opset(model: onnx.ModelProto) -> int:
    """Return the model's default-domain (``ai.onnx``) opset version."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def upgrade_opset(model: onnx.ModelProto, target: int, reason: str) -> onnx.ModelProto:
    """Convert ``model`` to default-domain opset ``target`` (no-op if already there).

    Raises:
        ValueError: the opset cannot be converted, naming the current and wanted opset.
    """
    import onnx
    from onnx import version_converter

    current = default_opset(model)
    if current >= target:
        return model
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as err:
        raise ValueError(
            f"onnx_path: model opset {current} is too old for {reason} (needs opset >= "
            f"{target}) and automatic conversion failed: {err}"
        ) from None
    # The converter keeps the IR version; opset >= 21 needs IR >= 10, 19 needs IR >= 9.
    ir_needed = {19: 9, 20: 9, 21: 10, 22: 10, 23: 11}.get(target, converted.ir_version)
    converted.ir_version = max(converted.ir_version, ir_needed)
    onnx.checker.check_model(converted)
    return converted


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
        if attr.name in ("value_int", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.int64)
    return None  # sparse_value / value_string(s): left as nodes


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn main-graph ``Constant`` nodes into initializers; returns how many."""
    from onnx import numpy_helper

    graph = model.graph
    keep = []
    count = 0
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        value = _constant_value(node) if node.op_type == "Constant" and not node.domain else None
        if value is None or node.output[0] in outputs:
            keep.append(node)
            continue
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(keep)
    return count


def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    """Names read from the outer scope by any subgraph of ``graph``'s nodes."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == attr.GRAPH else list(attr.graphs)
            for sub in subs:
                for sn in sub.node:
                    names.update(sn.input)
                names |= _subgraph_inputs(sub)
    return names


def fold_constants(model: onnx.ModelProto) -> int:
    """Evaluate deterministic nodes whose inputs are all initializers; returns how many."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    consts = {init.name: init for init in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    keep = []
    folded = 0
    for node in graph.node:
        inputs = [i for i in node.input if i]
        foldable = (
            node.op_type in FOLDABLE_OPS
            and not node.domain
            and inputs
            and all(i in consts for i in inputs)
            and not any(o in graph_outputs for o in node.output)
        )
        if not foldable:
            keep.append(node)
            continue
        feeds = {name: numpy_helper.to_array(consts[name]) for name in inputs}
        try:
            from onnx import helper

            single = helper.make_graph(
                [node],
                "fold",
                [helper.make_tensor_value_info(n, consts[n].data_type, None) for n in inputs],
                [onnx.ValueInfoProto(name=o) for o in node.output],
            )
            ref_model = helper.make_model(single, opset_imports=list(model.opset_import))
            results = ReferenceEvaluator(ref_model).run(None, feeds)
        except Exception as err:  # unsupported by the reference runtime: keep the node
            _LOG.debug("not folding %s (%s): %s", node.name, node.op_type, err)
            keep.append(node)
            continue
        if any(np.asarray(r).size > _MAX_FOLDED_ELEMENTS for r in results):
            keep.append(node)
            continue
        for name, value in zip(node.output, results, strict=True):
            tensor = numpy_helper.from_array(np.asarray(value), name)
            graph.initializer.append(tensor)
            consts[name] = tensor
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
    return folded


def fold_batchnorm_into_conv(model: onnx.ModelProto) -> int:
    """Fold inference ``BatchNormalization`` into the preceding ``Conv``; returns how many.

    ``y = gamma * (conv(x, W) + b - mean) / sqrt(var + eps) + beta`` equals a Conv with
    ``W' = W * k`` (per output channel) and ``b' = (b - mean) * k + beta``, ``k =
    gamma / sqrt(var + eps)``. This is what a TensorRT-style backend fuses, so the
    quantizer should see (and scale) the folded weight.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    for out in graph.output:
        consumers[out.name] = consumers.get(out.name, 0) + 1
    producers = {o: n for n in graph.node for o in n.output}
    removed: set[str] = set()
    replaced: dict[str, onnx.TensorProto] = {}
    count = 0
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or bn.domain or len(bn.output) != 1:
            continue
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or consumers.get(conv.output[0], 0) != 1:
            continue
        names = list(bn.input[1:5])
        if not all(n in inits for n in names) or conv.input[1] not in inits:
            continue
        if consumers.get(conv.input[1], 0) != 1:
            continue  # shared weight: folding would change the other user
        has_bias = len(conv.input) > 2 and conv.input[2]
        if has_bias and (conv.input[2] not in inits or consumers.get(conv.input[2], 0) != 1):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in names)
        weight = numpy_helper.to_array(inits[conv.input[1]])
        bias = (
            numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
            if has_bias
            else np.zeros(weight.shape[0])
        )
        k = gamma / np.sqrt(var + eps)
        new_w = weight.astype(np.float64) * k.reshape(-1, *([1] * (weight.ndim - 1)))
        new_b = (bias - mean) * k + beta
        w_name = conv.input[1]
        b_name = conv.input[2] if has_bias else f"{conv.name or conv.output[0]}_bn_bias"
        replaced[w_name] = numpy_helper.from_array(new_w.astype(weight.dtype), w_name)
        replaced[b_name] = numpy_helper.from_array(new_b.astype(weight.dtype), b_name)
        if not has_bias:
            while len(conv.input) < 3:
                conv.input.append("")
            conv.input[2] = b_name
        conv.output[0] = bn.output[0]
        removed.add(bn.name)
        count += 1
    if count:
        kept_inits = [i for i in graph.initializer if i.name not in replaced]
        del graph.initializer[:]
        graph.initializer.extend(kept_inits + list(replaced.values()))
        kept_nodes = [n for n in graph.node if n.name not in removed]
        del graph.node[:]
        graph.node.extend(kept_nodes)
    return count


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed main-graph node a unique name (exclusion lists and reports use them)."""
    taken = {n.name for n in model.graph.node if n.name}
    for idx, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{idx}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def remove_unused_initializers(model: onnx.ModelProto) -> None:
    """Drop initializers that no node (or subgraph, or graph output) reads."""
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    used |= _subgraph_inputs(graph)
    kept = [i for i in graph.initializer if i.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run ONNX shape inference, keeping the model unchanged if inference fails."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as err:
        _LOG.warning("shape inference failed, continuing without it: %s", err)
        return model


def sanitize(
    model: onnx.ModelProto,
    min_opset: int | None = None,
    reason: str = "this mode",
    fold_batchnorm: bool = True,
) -> tuple[onnx.ModelProto, SanitizeReport]:
    """Bring an exported model to the canonical form the quantizer and autocast expect.

    Args:
        model: the model (modified in place where possible; use the returned one).
        min_opset: raise the default-domain opset to at least this version.
        reason: what needs ``min_opset``, for the error message.
        fold_batchnorm: fold ``Conv -> BatchNormalization`` pairs.

    Returns:
        ``(model, report)``.
    """
    report = SanitizeReport(opset_from=default_opset(model))
    if min_opset is not None:
        # Upgrade first: the converter may add Constant nodes that the passes below absorb.
        model = upgrade_opset(model, min_opset, reason)
    init_names = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(graph_inputs) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(graph_inputs)
        report.notes.append("initializers removed from graph inputs")
    report.constants_to_initializers = constants_to_initializers(model)
    name_nodes(model)
    report.folded_nodes = fold_constants(model)
    if fold_batchnorm:
        report.folded_batchnorms = fold_batchnorm_into_conv(model)
    remove_unused_initializers(model)
    report.opset_to = default_opset(model)
    model = infer_shapes(model)
    return model, report
