"""Fold ``Conv -> Mul(const) -> Add(const)`` chains into the Conv's weight and bias.

Paddle exports (PP-LCNetV3's learnable affine blocks, for example) scale and shift every
Conv output by constants. onnxruntime folds such chains into the Conv when it loads a float
model (its Conv-Mul and Conv-Add fusions), but not in a QDQ model: there, a QuantizeLinear
must follow the Conv itself for the pair to become a ``QLinearConv``. Folding them before
placing Q/DQ gives the quantizer the Conv the runtime really computes:

``Mul``: ``k * (W * x + b) = (k W) * x + k b``; ``Add``: ``W * x + b + c = W * x + (b + c)``,
for ``k``, ``c`` that are scalars or per output channel. Exact up to float rounding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx


def _per_channel(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """``value`` as a ``(channels,)`` vector if it only broadcasts along axis 1 of ``rank``."""
    if value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (channels,))


def fold_conv_affine(model: onnx.ModelProto) -> int:
    """Fold constant per-channel ``Mul``/``Add`` after ``Conv`` into it (in place).

    Only a Conv whose output is read by that one node alone, with an unshared constant
    weight (and bias), is changed. Returns the number of folded nodes.
    """
    from onnx import numpy_helper

    from modeloptim.onnx.sanitize import name_nodes

    name_nodes(model)  # removal below is by node name
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    removed: set[str] = set()
    folded = 0
    for conv in graph.node:
        if conv.op_type != "Conv" or conv.domain or len(conv.input) < 2:
            continue
        w_name = conv.input[1]
        if w_name not in inits or len(readers.get(w_name, [])) != 1:
            continue
        b_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
        if b_name and (b_name not in inits or len(readers.get(b_name, [])) != 1):
            continue
        weight = numpy_helper.to_array(inits[w_name]).astype(np.float64)
        channels = weight.shape[0]
        bias = (
            numpy_helper.to_array(inits[b_name]).astype(np.float64)
            if b_name
            else np.zeros(channels)
        )
        changed = False
        while conv.output[0] not in graph_outputs:
            nxt = readers.get(conv.output[0], [])
            if len(nxt) != 1 or nxt[0].op_type not in ("Mul", "Add") or nxt[0].domain:
                break
            op = nxt[0]
            others = [i for i in op.input if i != conv.output[0]]
            if len(op.input) != 2 or len(others) != 1 or others[0] not in inits:
                break
            vec = _per_channel(numpy_helper.to_array(inits[others[0]]), channels, weight.ndim)
            if vec is None:
                break
            if op.op_type == "Mul":
                weight = weight * vec.reshape(-1, *([1] * (weight.ndim - 1)))
                bias = bias * vec
            else:
                bias = bias + vec
            # The op's readers now read the Conv: the ``readers`` entry stays valid.
            conv.output[0] = op.output[0]
            removed.add(op.name)
            folded += 1
            changed = True
        if changed:
            dtype = numpy_helper.to_array(inits[w_name]).dtype
            inits[w_name].CopyFrom(numpy_helper.from_array(weight.astype(dtype), w_name))
            if not b_name:
                b_name = f"{conv.name or conv.output[0]}_folded_bias"
                while len(conv.input) < 3:
                    conv.input.append("")
                conv.input[2] = b_name
                new = numpy_helper.from_array(bias.astype(dtype), b_name)
                graph.initializer.append(new)
                inits[b_name] = graph.initializer[-1]
                readers[b_name] = [conv]
            else:
                inits[b_name].CopyFrom(numpy_helper.from_array(bias.astype(dtype), b_name))
    if removed:
        kept = [n for n in graph.node if n.name not in removed]
        del graph.node[:]
        graph.node.extend(kept)
    return folded
