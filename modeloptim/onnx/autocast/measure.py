"""Measure, per node, whether it is safe to compute in a low-precision float type.

For each candidate node the fp32 reference values of its inputs and outputs are captured with
onnxruntime on reference data. A node stays in fp32 when

* a float input or output exceeds the type's range (it would overflow to inf), or
* running the node alone in onnxruntime on inputs rounded to the low type, and rounding its
  outputs, deviates from the fp32 reference by more than ``max_relative_error``
  (``||y_low - y||_2 / ||y||_2``): catastrophic cancellation, underflow to zero, exponents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from modeloptim.onnx.autocast.precision import LowPrecision
from modeloptim.onnx.ort_utils import Feed, make_session, run_capture

if TYPE_CHECKING:
    import onnx


def capture_all(
    model: onnx.ModelProto, names: Sequence[str], feeds: Sequence[Feed]
) -> list[dict[str, np.ndarray]]:
    """fp32 values of ``names`` (plus the feeds) for every feed."""
    values: list[dict[str, np.ndarray]] = [dict(f) for f in feeds]
    # run_capture loops over name chunks, and over all feeds in order inside each chunk.
    counter = iter(range(10**12))

    def keep(vals: dict[str, np.ndarray]) -> None:
        values[next(counter) % len(feeds)].update(vals)

    run_capture(model, list(names), feeds, keep, progress="autocast reference")
    return values


def _single_node_model(node: onnx.NodeProto, types: dict[str, int], opsets) -> onnx.ModelProto:
    import onnx
    from onnx import helper

    names = list(dict.fromkeys(n for n in node.input if n))  # Mul(x, x) declares x once
    inputs = [helper.make_tensor_value_info(n, types.get(n, 1), None) for n in names]
    outputs = [onnx.ValueInfoProto(name=o) for o in node.output if o]  # ORT infers the type
    graph = helper.make_graph([node], "single", inputs, outputs)
    model = helper.make_model(graph, opset_imports=list(opsets))
    model.ir_version = 8
    return model


def node_error(
    node: onnx.NodeProto,
    values: Sequence[dict[str, np.ndarray]],
    consts: dict[str, np.ndarray],
    types: dict[str, int],
    precision: LowPrecision,
    opsets,
) -> tuple[float, float]:
    """Return ``(max |value| over float inputs/outputs, relative error in low precision)``."""
    float_ins = [n for n in node.input if n and types.get(n) == 1]
    float_outs = [o for o in node.output if o and types.get(o) == 1]
    peak = 0.0
    for vals in values:
        for name in float_ins + float_outs:
            arr = vals.get(name, consts.get(name))
            if arr is not None and arr.size:
                finite = np.abs(arr[np.isfinite(arr)])
                peak = max(peak, float(finite.max()) if finite.size else 0.0)
    if peak > precision.max_value or not float_outs:
        return peak, 0.0
    session = make_session(_single_node_model(node, types, opsets), optimize=False)
    num = den = 0.0
    for vals in values:
        feed = {}
        for name in node.input:
            if not name:
                continue
            arr = vals.get(name, consts.get(name))
            if arr is None:
                return peak, 0.0  # value not captured (e.g. from a subgraph): no evidence
            feed[name] = precision.round(arr) if name in float_ins else arr
        outs = session.run(float_outs, feed)
        for name, got in zip(float_outs, outs, strict=True):
            ref = vals[name].astype(np.float64)
            low = precision.round(np.asarray(got, dtype=np.float32)).astype(np.float64)
            finite = np.isfinite(ref)
            diff = np.where(finite, low - ref, 0.0)
            num += float(np.sum(diff * diff))
            den += float(np.sum(np.where(finite, ref * ref, 0.0)))
            if not np.all(np.isfinite(low[finite])):
                return peak, float("inf")
    rel = float(np.sqrt(num / den)) if den > 0 else (0.0 if num == 0 else float("inf"))
    return peak, rel
