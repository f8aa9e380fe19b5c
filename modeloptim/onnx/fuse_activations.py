"""Recognize activations that exporters write as elementwise chains, and rewrite them as one op.

paddle2onnx writes HardSwish as ``x * Clip(x + 3, 0, 6) / 6`` (four nodes). As one
``HardSwish`` node (opset 14) it runs as one pass over the tensor instead of four, and the
quantizer can see where its input stops mattering (below -3 it is 0), so the QuantizeLinear
in front of it spends its levels on the range that reaches the output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

HARDSWISH_OPSET = 14


def _const(inits: dict, name: str) -> float | None:
    from onnx import numpy_helper

    if name not in inits:
        return None
    value = numpy_helper.to_array(inits[name])
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def fuse_hardswish(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite ``x * Clip(x + 3, 0, 6) / 6`` as ``HardSwish(x)``; returns ``(model, count)``.

    Raises the default-domain opset to 14 (where HardSwish exists) only if a chain is found.
    Only chains whose intermediate tensors have no other reader are rewritten.
    """
    from onnx import helper

    from modeloptim.onnx.sanitize import default_opset, name_nodes, upgrade_opset

    name_nodes(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def only_reader(tensor: str, op_type: str) -> onnx.NodeProto | None:
        nxt = readers.get(tensor, [])
        if tensor in outputs or len(nxt) != 1 or nxt[0].op_type != op_type or nxt[0].domain:
            return None
        return nxt[0]

    found: list[tuple[str, list[onnx.NodeProto]]] = []
    for add in graph.node:
        if add.op_type != "Add" or add.domain or len(add.input) != 2:
            continue
        for x, three in (add.input, add.input[::-1]):
            if _const(inits, three) == 3.0 and x not in inits:
                break
        else:
            continue
        clip = only_reader(add.output[0], "Clip")
        if clip is None or len(clip.input) != 3:
            continue
        if (_const(inits, clip.input[1]), _const(inits, clip.input[2])) != (0.0, 6.0):
            continue
        mul = only_reader(clip.output[0], "Mul")
        if mul is None or set(mul.input) != {x, clip.output[0]}:
            continue
        div = only_reader(mul.output[0], "Div")
        if div is None or div.input[0] != mul.output[0] or _const(inits, div.input[1]) != 6.0:
            continue
        found.append((x, [add, clip, mul, div]))
    if not found:
        return model, 0
    if default_opset(model) < HARDSWISH_OPSET:
        # Convert before rewriting: the converter knows no HardSwish below opset 14.
        return fuse_hardswish(upgrade_opset(model, HARDSWISH_OPSET, "HardSwish"))
    removed = {n.name for _, chain in found for n in chain}
    replacement = {
        chain[0].name: helper.make_node(
            "HardSwish", [x], [chain[-1].output[0]], name=f"{chain[0].name}_hardswish"
        )
        for x, chain in found
    }
    kept = []
    for node in graph.node:
        if node.name in replacement:
            kept.append(replacement[node.name])
        elif node.name not in removed:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model, len(found)


def hardswish_reference(x: np.ndarray) -> np.ndarray:
    """``x * clip(x + 3, 0, 6) / 6`` in float64 (for tests and range rules)."""
    x = np.asarray(x, np.float64)
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
