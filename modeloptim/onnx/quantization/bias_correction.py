"""Empirical bias correction of quantized Conv / Gemm / MatMul(+Add) nodes.

Quantizing the weights and input of a linear op shifts the mean of its output: per output
channel ``c``, ``E[y_q[c] - y[c]]`` is not zero (rounding is biased for a finite set of
weights, clipped inputs lose mass on one side). The classic post-training fix (Nagel et al.
2019, "Data-Free Quantization", empirical variant; Banner et al. 2019) subtracts that mean
error, measured on calibration data, from the op's bias. The error is measured node by node:
every node runs alone in onnxruntime on the float model's captured inputs, once as is and
once with its inputs fake-quantized exactly as the Q/DQ graph will quantize them.

Nodes and their bias:

* ``Conv``: input 2 (created as zeros when absent); channel axis 1 of the output.
* ``Gemm``: input ``C`` when it is a constant ``(N,)`` vector (created when absent).
* ``MatMul`` with a constant weight whose single consumer is ``Add`` with a constant ``(N,)``
  vector (the exporter's ``x @ W + b``); channel = last axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from modeloptim.onnx.ort_utils import Feed, make_session, run_capture
from modeloptim.onnx.quantization.activation import ActivationType, QParams
from modeloptim.onnx.quantization.formats import QuantFormat
from modeloptim.onnx.quantization.qdq import QdqPlan, quantize_weight

if TYPE_CHECKING:
    import onnx


# Target nodes per onnxruntime session: all their outputs for one feed are held at once.
_NODES_PER_SESSION = 16


@dataclass
class _Target:
    node: onnx.NodeProto
    bias: str | None  # initializer name of the bias, None if it must be created
    channel_axis: int  # of the node's output
    channels: int


def _targets(model: onnx.ModelProto, plan: QdqPlan) -> list[_Target]:
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    weighted = {(n.name, idx) for n, idx, _ in plan.weights}
    out: list[_Target] = []

    def own(bias: str | None) -> bool:  # a shared bias cannot take one node's correction
        return bias is None or (bias in inits and len(consumers.get(bias, [])) == 1)

    for node in model.graph.node:
        if node.name not in plan.nodes or (node.name, 1) not in weighted:
            continue
        w = inits[node.input[1]]
        if node.op_type == "Conv" and len(w.dims) >= 3:
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if own(bias):
                out.append(_Target(node, bias, 1, int(w.dims[0])))
        elif node.op_type == "Gemm" and len(w.dims) == 2:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            n_out = int(w.dims[0] if trans_b else w.dims[1])
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
            if own(bias) and beta == 1.0 and (bias is None or list(inits[bias].dims) == [n_out]):
                out.append(_Target(node, bias, -1, n_out))
        elif node.op_type == "MatMul" and len(w.dims) == 2:
            readers = consumers.get(node.output[0], [])
            if len(readers) == 1 and readers[0].op_type == "Add":
                other = [i for i in readers[0].input if i != node.output[0]]
                n_out = int(w.dims[1])
                if len(other) == 1 and own(other[0]) and list(inits[other[0]].dims) == [n_out]:
                    out.append(_Target(node, other[0], -1, n_out))
    return out


def correct_biases(
    model: onnx.ModelProto,
    plan: QdqPlan,
    fmt: QuantFormat,
    act: ActivationType,
    qparams: dict[str, QParams],
    feeds: Sequence[Feed],
) -> dict[str, float]:
    """Shift the bias of every planned linear node by its mean quantization error (in place).

    Args:
        model: float model the plan belongs to (weights still float); biases are updated.
        plan: the final Q/DQ plan (nodes kept float are not in it and are not touched).
        fmt: weight format (per-channel weights as :func:`quantize_weight` stores them).
        act: activation type used to fake-quantize activation inputs with ``qparams``.
        qparams: tensor -> ``(scale, zero_point)`` of every quantized activation.
        feeds: calibration feeds; the error is averaged over all of them.

    Returns:
        node name -> relative size of the correction, ``||delta|| / ||y||`` per element (for
        the report).
    """
    from onnx import numpy_helper

    targets = _targets(model, plan)
    if not targets or not feeds:
        return {}
    inits = {i.name: i for i in model.graph.initializer}
    weights = {(n.name, idx): axis for n, idx, axis in plan.weights}
    float_weights: dict[str, np.ndarray] = {}
    fq_weights: dict[str, np.ndarray] = {}
    for t in targets:
        w = numpy_helper.to_array(inits[t.node.input[1]])
        float_weights[t.node.name] = w
        axis = weights[(t.node.name, 1)]
        q, scale = quantize_weight(w.astype(np.float32), fmt, axis)
        shape = [1] * w.ndim
        if axis is not None:
            shape[axis % w.ndim] = -1
        fq_weights[t.node.name] = q.astype(np.float32) * scale.reshape(shape)
    # One session per group of targets runs every node of the group on float and on
    # fake-quantized inputs in one call (each node copy is fed exactly what a session of its
    # own would get, so the outputs are the same), instead of two runs per node and feed.
    # A node reading a constant input gets no correction (nothing is captured for it).
    active = [t for t in targets if t.node.input[0] not in inits]
    groups = [active[i : i + _NODES_PER_SESSION] for i in range(0, len(active), _NODES_PER_SESSION)]
    sessions = [
        make_session(_error_model(g, model.opset_import), optimize=False, spin=False)
        for g in groups
    ]
    needed = sorted({t.node.input[0] for t in active})
    sums = {t.node.name: np.zeros(t.channels) for t in targets}
    counts = dict.fromkeys(sums, 0)
    energy = dict.fromkeys(sums, 0.0)

    def accumulate(values: dict[str, np.ndarray]) -> None:
        quantized: dict[str, np.ndarray] = {}  # fake-quantized inputs, once per tensor
        for group, sess in zip(groups, sessions, strict=True):
            feed: dict[str, np.ndarray] = {}
            for k, t in enumerate(group):
                src = t.node.input[0]
                x = values[src]
                if src in plan.activations and src in qparams and src not in quantized:
                    quantized[src] = act.fake_quantize(x, *qparams[src])
                feed[f"x{k}"], feed[f"xq{k}"] = x, quantized.get(src, x)
                feed[f"w{k}"], feed[f"wq{k}"] = float_weights[t.node.name], fq_weights[t.node.name]
            outs = sess.run([f"y{tag}{k}" for k in range(len(group)) for tag in ("", "q")], feed)
            for k, t in enumerate(group):
                name = t.node.name
                ref, got = outs[2 * k], outs[2 * k + 1]
                err = np.moveaxis(np.asarray(got, np.float64) - ref, t.channel_axis, -1)
                sums[name] += err.reshape(-1, t.channels).sum(0)
                counts[name] += err.size // t.channels
                energy[name] += float(np.sum(np.asarray(ref, np.float64) ** 2))

    if active:
        run_capture(
            model,
            needed,
            feeds,
            accumulate,
            progress="bias correction",
            chunk=len(needed),
            spin=False,
        )
    report: dict[str, float] = {}
    new_inits = []
    for t in targets:
        name = t.node.name
        if not counts[name]:
            continue
        delta = sums[name] / counts[name]
        if t.bias is None:
            bias = np.zeros(t.channels, np.float32)
            bias_name = f"{name}_corrected_bias"
            while bias_name in inits:
                bias_name += "_"
            while len(t.node.input) < 3:
                t.node.input.append("")
            t.node.input[2] = bias_name
        else:
            bias_name = t.bias
            bias = numpy_helper.to_array(inits[bias_name]).astype(np.float32)
        fixed = numpy_helper.from_array((bias - delta).astype(np.float32), bias_name)
        if bias_name in inits:
            inits[bias_name].CopyFrom(fixed)
        else:
            new_inits.append(fixed)
            inits[bias_name] = fixed
        rms = np.sqrt(energy[name] / max(counts[name] * t.channels, 1))
        report[name] = float(np.linalg.norm(delta) / np.sqrt(t.channels) / max(rms, 1e-30))
    model.graph.initializer.extend(new_inits)
    return report


def _bias_free(node: onnx.NodeProto) -> onnx.NodeProto:
    """A copy of ``node`` with only its first two inputs (the bias cancels in the error)."""
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    del copy.input[2:]
    return copy


def _error_model(targets: Sequence[_Target], opsets) -> onnx.ModelProto:
    """Each target's bias-free node twice, on float and on fake-quantized inputs.

    Target ``k`` gives ``y{k} = node(x{k}, w{k})`` and ``yq{k} = node(xq{k}, wq{k})``, all
    float32 graph inputs and outputs.
    """
    import onnx
    from onnx import helper

    nodes, inputs, outputs = [], [], []
    for k, t in enumerate(targets):
        for tag in ("", "q"):
            node = _bias_free(t.node)
            node.name = f"{t.node.name}/{tag or 'ref'}"
            node.input[0], node.input[1] = f"x{tag}{k}", f"w{tag}{k}"
            node.output[0] = f"y{tag}{k}"
            nodes.append(node)
            inputs += [node.input[0], node.input[1]]
            outputs.append(node.output[0])
    graph = helper.make_graph(
        nodes,
        "bias_errors",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in inputs],
        [onnx.ValueInfoProto(name=o) for o in outputs],
    )
    model = helper.make_model(graph, opset_imports=list(opsets))
    model.ir_version = 8
    return model
