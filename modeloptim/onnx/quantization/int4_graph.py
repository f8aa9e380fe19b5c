"""Graph rewrite for INT4 weight-only quantization (see :mod:`.int4` for the numerics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from modeloptim.onnx.ort_utils import Feed, run_capture
from modeloptim.onnx.quantization.int4 import (
    Int4Report,
    Int4Target,
    _as_kn,
    awq_clip_amax,
    awq_lite_scale,
    pack_matmul_nbits,
    quantize_blocked,
)

if TYPE_CHECKING:
    import onnx


def collect_rows(
    model: onnx.ModelProto, names: Sequence[str], feeds: Sequence[Feed], max_rows: int = 256
) -> dict[str, np.ndarray]:
    """Capture activations ``names`` and keep up to ``max_rows`` rows ``(n, K)`` of each."""
    rng = np.random.default_rng(0)
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    per_feed = max(1, max_rows // max(len(feeds), 1))

    def keep(values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            flat = value.reshape(-1, value.shape[-1]).astype(np.float32)
            if flat.shape[0] > per_feed:
                flat = flat[rng.choice(flat.shape[0], per_feed, replace=False)]
            rows[name].append(flat)

    run_capture(model, list(names), feeds, keep, progress="int4 calibration")
    return {n: np.concatenate(v)[:max_rows] for n, v in rows.items() if v}


def apply_int4(
    model: onnx.ModelProto,
    targets: Sequence[Int4Target],
    block_size: int,
    method: str,
    feeds: Sequence[Feed] | None,
    use_matmul_nbits: bool,
    report: Int4Report,
) -> None:
    """Quantize ``targets`` in place with ``method`` (``rtn``/``awq_lite``/``awq_clip``)."""
    from onnx import helper, numpy_helper
    from tqdm.auto import tqdm

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    taken = {o for n in graph.node for o in n.output} | set(inits) | {i.name for i in graph.input}

    def unique(name: str) -> str:
        out = name
        while out in taken:
            out += "_"
        taken.add(out)
        return out

    acts: dict[str, np.ndarray] = {}
    if method != "rtn" and feeds:
        names = sorted({t.activation for t in targets if t.activation})
        acts = collect_rows(model, names, feeds)
    position = {n.name: i for i, n in enumerate(graph.node)}
    before: dict[int, list[onnx.NodeProto]] = {}
    replace: dict[str, list[onnx.NodeProto]] = {}
    new_inits: list[onnx.TensorProto] = []
    shared: dict[str, str] = {}
    for target in tqdm(targets, desc=f"int4 {method}", leave=False):
        node = target.node
        if (
            use_matmul_nbits
            and node.op_type == "Gemm"
            and any(a.name in ("alpha", "beta") and a.f != 1.0 for a in node.attribute)
        ):
            report.skipped[node.name] = "Gemm with alpha/beta != 1: MatMulNBits cannot express it"
            continue
        w = numpy_helper.to_array(inits[target.weight]).astype(np.float32)
        x = acts.get(target.activation) if target.activation else None
        if target.activation is None:  # Gather: block along the embedding axis, RTN only
            if target.weight not in shared:
                q, scale = quantize_blocked(w, target.axis, block_size)
                shared[target.weight] = _add_dq(
                    graph,
                    new_inits,
                    before,
                    position[node.name],
                    unique,
                    target.weight,
                    q,
                    scale,
                    target.axis,
                    block_size,
                )
            node.input[target.index] = shared[target.weight]
            report.quantized_nodes.append(node.name)
            continue
        w_kn = _as_kn(w, target.axis)
        if method == "awq_lite" and x is not None:
            s, alpha = awq_lite_scale(w_kn, x, block_size)
            report.awq_alpha[node.name] = alpha
            w_kn = w_kn * s[:, None]
            inv = unique(f"{node.name}_awq_inv_scale")
            new_inits.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
            scaled = unique(f"{node.name}_awq_input")
            before.setdefault(position[node.name], []).append(
                helper.make_node(
                    "Mul", [node.input[0], inv], [scaled], name=unique(f"{node.name}_awq_mul")
                )
            )
            node.input[0] = scaled
        amax = None
        if method == "awq_clip":
            amax = awq_clip_amax(w_kn, x, block_size)
            base = np.maximum(quantize_blocked(w_kn, 0, block_size)[1] * 7.0, 1e-12)
            report.clip_ratio_mean[node.name] = float(np.mean(amax / base))
        q_kn, scale_kn = quantize_blocked(w_kn, 0, block_size, amax)
        report.quantized_nodes.append(node.name)
        if use_matmul_nbits:
            replace[node.name] = _matmul_nbits(node, q_kn, scale_kn, block_size, new_inits, unique)
            continue
        key = target.weight if method == "rtn" else f"{target.weight}@{node.name}"
        if key not in shared:
            q, scale = (q_kn, scale_kn) if target.axis == 0 else (q_kn.T, scale_kn.T)
            shared[key] = _add_dq(
                graph,
                new_inits,
                before,
                position[node.name],
                unique,
                target.weight,
                q,
                scale,
                target.axis,
                block_size,
            )
        node.input[target.index] = shared[key]
    ordered = []
    for i, node in enumerate(graph.node):
        ordered.extend(before.get(i, []))
        ordered.extend(replace.get(node.name, [node]))
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(new_inits)
    if (
        use_matmul_nbits
        and replace
        and not any(o.domain == "com.microsoft" for o in model.opset_import)
    ):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _add_dq(graph, new_inits, before, pos, unique, weight, q, scale, axis, block) -> str:
    from onnx import helper, numpy_helper

    q_name, s_name = unique(f"{weight}_int4"), unique(f"{weight}_int4_scale")
    new_inits.append(numpy_helper.from_array(q, q_name))
    new_inits.append(numpy_helper.from_array(scale.astype(np.float32), s_name))
    out = unique(f"{weight}_dq")
    before.setdefault(pos, []).append(
        helper.make_node(
            "DequantizeLinear",
            [q_name, s_name],
            [out],
            name=unique(f"{weight}_DQ"),
            axis=axis,
            block_size=block,
        )
    )
    return out


def _matmul_nbits(node, q_kn, scale_kn, block, new_inits, unique) -> list:
    from onnx import helper, numpy_helper

    k, n = q_kn.shape
    packed, scales = pack_matmul_nbits(q_kn, scale_kn, block)
    b_name, s_name = unique(f"{node.name}_nbits_B"), unique(f"{node.name}_nbits_scales")
    new_inits.append(numpy_helper.from_array(packed, b_name))
    new_inits.append(numpy_helper.from_array(scales, s_name))
    out = node.output[0]
    has_bias = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
    mm_out = unique(f"{out}_nbits") if has_bias else out
    nodes = [
        helper.make_node(
            "MatMulNBits",
            [node.input[0], b_name, s_name],
            [mm_out],
            name=node.name,
            domain="com.microsoft",
            K=k,
            N=n,
            bits=4,
            block_size=block,
        )
    ]
    if has_bias:
        nodes.append(
            helper.make_node(
                "Add", [mm_out, node.input[2]], [out], name=unique(f"{node.name}_bias")
            )
        )
    return nodes
