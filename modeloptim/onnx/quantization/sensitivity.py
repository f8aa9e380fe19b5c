"""Measured per-node quantization sensitivity, to keep the most fragile nodes in float.

For every node the Q/DQ plan would quantize, its float inputs are taken from the fp32 model
on a few calibration feeds (captured with onnxruntime), fake-quantized exactly as the graph
will do it (per-tensor activations with the calibrated amax, per-channel weights), and the
node alone is run in onnxruntime on both versions. The local sensitivity is the L2 relative
error of its outputs, ``||y_q - y|| / ||y||``. The ``count`` worst nodes stay float.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from modeloptim.onnx.ort_utils import Feed, make_session, run_capture
from modeloptim.onnx.quantization.activation import ActivationType, QParams
from modeloptim.onnx.quantization.formats import QuantFormat
from modeloptim.onnx.quantization.qdq import QdqPlan, QdqReport, quantize_weight

if TYPE_CHECKING:
    import onnx


def single_node_model(node: onnx.NodeProto, inputs: Sequence[str], opsets) -> onnx.ModelProto:
    """A model holding ``node`` alone, with ``inputs`` as float32 graph inputs."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [node],
        "one",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in inputs],
        [onnx.ValueInfoProto(name=o) for o in node.output if o],
    )
    model = helper.make_model(graph, opset_imports=list(opsets))
    model.ir_version = 8
    return model


def node_sensitivity(
    model: onnx.ModelProto,
    plan: QdqPlan,
    amax: dict[str, float],
    fmt: QuantFormat,
    feeds: Sequence[Feed],
    act: ActivationType | None = None,
    qparams: dict[str, QParams] | None = None,
) -> dict[str, float]:
    """Local relative output error of each planned node when its inputs are quantized.

    Activations are fake-quantized with ``act`` and ``qparams`` when given (asymmetric
    types), else symmetrically from ``amax`` in ``fmt``.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node if n.name in set(plan.nodes)}
    weights = {(n.name, idx): axis for n, idx, axis in plan.weights}
    needed = sorted({i for n in nodes.values() for i in n.input if i and i not in inits})
    values: list[dict[str, np.ndarray]] = [dict(f) for f in feeds]
    counter = iter(range(10**12))

    def keep(vals: dict[str, np.ndarray]) -> None:
        values[next(counter) % len(feeds)].update(vals)

    run_capture(model, needed, feeds, keep, progress="sensitivity capture", spin=False)
    scores: dict[str, float] = {}
    for name, node in nodes.items():
        inputs = [i for i in dict.fromkeys(node.input) if i]
        quantized: dict[str, np.ndarray | None] = {}
        for idx, tensor in enumerate(node.input):
            if (name, idx) in weights:
                w = numpy_helper.to_array(inits[tensor]).astype(np.float32)
                q, scale = quantize_weight(w, fmt, weights[(name, idx)])
                axis = weights[(name, idx)]
                shape = [1] * w.ndim
                if axis is not None:
                    shape[axis % w.ndim] = -1
                quantized[tensor] = q.astype(np.float32) * scale.reshape(shape)
            elif tensor in plan.activations and tensor in amax:
                quantized[tensor] = None  # per feed below
        session = make_session(
            single_node_model(node, inputs, model.opset_import), optimize=False, spin=False
        )
        num = den = 0.0
        for vals in values:
            ref_feed, q_feed = {}, {}
            for tensor in inputs:
                base = vals.get(tensor)
                if base is None:
                    base = numpy_helper.to_array(inits[tensor])
                ref_feed[tensor] = base
                if tensor in quantized:
                    fixed = quantized[tensor]
                    if fixed is not None:
                        q_feed[tensor] = fixed
                    elif act is not None and qparams is not None and tensor in qparams:
                        q_feed[tensor] = act.fake_quantize(base, *qparams[tensor])
                    else:
                        scale = fmt.scale_from_amax(amax.get(tensor, 0.0))
                        q_feed[tensor] = _act_fq(fmt, base, scale)
                else:
                    q_feed[tensor] = base
            ref = session.run(None, ref_feed)
            got = session.run(None, q_feed)
            for r, g in zip(ref, got, strict=True):
                num += float(np.sum((np.asarray(g, np.float64) - r) ** 2))
                den += float(np.sum(np.asarray(r, np.float64) ** 2))
        scores[name] = float(np.sqrt(num / den)) if den > 0 else 0.0
    return scores


def _act_fq(fmt: QuantFormat, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    # QuantizeLinear saturates activations at the full int8 range [-128, 127].
    if fmt.name == "int8":
        return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)
    return fmt.fake_quantize(x, scale)


def budget_count(scores: dict[str, float], budget: float, cap: int | None = None) -> int:
    """Fewest nodes to keep float so the rest's combined error fits ``budget``.

    Nodes are taken worst first; the error left by the quantized rest is estimated as the
    root of the sum of their squared scores (independent errors add in quadrature), and the
    smallest count whose rest is ``<= budget`` is returned (at most ``cap``).
    """
    ranked = sorted(scores.values(), reverse=True)
    # rest[k] = sqrt(sum of squares of ranked[k:])
    rest = np.sqrt(np.append(np.cumsum(np.square(ranked)[::-1])[::-1], 0.0))
    count = int(np.argmax(rest <= budget))
    return count if cap is None else min(count, cap)


def drop_sensitive(
    plan: QdqPlan, scores: dict[str, float], count: int, report: QdqReport
) -> list[str]:
    """Remove the ``count`` most sensitive nodes from ``plan``; returns their names."""
    worst = sorted(scores, key=scores.__getitem__, reverse=True)[:count]
    drop = set(worst)
    for name in worst:
        report.skipped[name] = f"sensitive: local quantization error {scores[name]:.3g}"
    plan.weights = [w for w in plan.weights if w[0].name not in drop]
    plan.activations = {
        t: kept
        for t, uses in plan.activations.items()
        if (kept := [(n, i) for n, i in uses if n.name not in drop])
    }
    plan.nodes = [n for n in plan.nodes if n not in drop]
    return worst


def output_sensitivity(
    model: onnx.ModelProto,
    plan: QdqPlan,
    quantize_only: Callable[[onnx.ModelProto, QdqPlan], None],
    feeds: Sequence[Feed],
    progress: str | None = "output sensitivity",
) -> dict[str, float]:
    """End-to-end sensitivity: the model's output error with one planned node quantized.

    For every node in ``plan``, a copy of ``model`` gets the Q/DQ of that node alone (by
    ``quantize_only(copy, sub_plan)``, which must insert them in place) and runs on
    ``feeds``; the score is the relative L2 error of all graph outputs against the float
    model, ``||y_q - y|| / ||y||``. Unlike the local score this sees how an error propagates
    to the result (e.g. a detection head's probability map, a recognizer's logits).
    """
    import onnx
    from tqdm.auto import tqdm

    ref_session = make_session(model, spin=False)
    refs = [ref_session.run(None, f) for f in feeds]
    scores: dict[str, float] = {}
    for name in tqdm(plan.nodes, desc=progress, disable=progress is None):
        sub = QdqPlan(
            {
                t: kept
                for t, uses in plan.activations.items()
                if (kept := [(n, i) for n, i in uses if n.name == name])
            },
            [w for w in plan.weights if w[0].name == name],
            [name],
        )
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        nodes = {n.name: n for n in copy.graph.node}
        # The plan refers to ``model``'s node objects: point it at the copy's.
        sub.activations = {
            t: [(nodes[n.name], i) for n, i in u] for t, u in sub.activations.items()
        }
        sub.weights = [(nodes[n.name], i, a) for n, i, a in sub.weights]
        quantize_only(copy, sub)
        session = make_session(copy, spin=False)
        num = den = 0.0
        for feed, ref in zip(feeds, refs, strict=True):
            for r, g in zip(ref, session.run(None, feed), strict=True):
                num += float(np.sum((np.asarray(g, np.float64) - r) ** 2))
                den += float(np.sum(np.asarray(r, np.float64) ** 2))
        scores[name] = float(np.sqrt(num / den)) if den > 0 else 0.0
    return scores
