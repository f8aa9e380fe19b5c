"""INT4 weight-only blocked quantization of MatMul/Gemm (and Gather) weights.

Weights are split into blocks of ``block_size`` elements along the reduction axis (the
embedding axis for Gather) and quantized symmetrically to ``[-7, 7]`` with one float scale per
block (DESIGN.md "INT4 block"). The graph stores them as an INT4 initializer behind an
opset-21 blocked ``DequantizeLinear``, or, on request, as onnxruntime's ``MatMulNBits``
contrib op. Calibration methods: ``rtn`` (round to nearest, no data), ``awq_lite``
(activation-aware per-input-channel scaling searched over a grid, with the inverse scale
applied to the activation by an inserted ``Mul``), and ``awq_clip`` (per-block clipping ratio
searched to minimize the output error on calibration activations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from modeloptim.onnx.quantization.formats import INT4, TINY_AMAX
from modeloptim.onnx.quantization.qdq import node_matches

if TYPE_CHECKING:
    import onnx

INT4_METHODS = ("rtn", "awq_lite", "awq_clip")
DEFAULT_INT4_OP_TYPES = ("MatMul", "Gemm", "Gather")
_FLOAT = 1


@dataclass
class Int4Target:
    """One weight to quantize: ``node.input[index]`` with the reduction axis ``axis``."""

    node: onnx.NodeProto
    index: int
    weight: str
    axis: int  # blocking axis of the stored weight (K for MatMul/Gemm, hidden for Gather)
    activation: str | None  # the input multiplied with the weight (None for Gather)


@dataclass
class Int4Report:
    """What the INT4 pass did."""

    quantized_nodes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    awq_alpha: dict[str, float] = field(default_factory=dict)
    clip_ratio_mean: dict[str, float] = field(default_factory=dict)


def plan_int4(
    model: onnx.ModelProto,
    op_types: Sequence[str],
    nodes_to_exclude: Sequence[str] | None,
    report: Int4Report,
) -> list[Int4Target]:
    """Find the 2-D float constant weights of ``op_types`` nodes."""
    inits = {i.name: i for i in model.graph.initializer}
    targets = []
    for node in model.graph.node:
        if node.op_type not in op_types or node.domain not in ("", "ai.onnx"):
            continue
        if node_matches(node, nodes_to_exclude):
            report.skipped[node.name] = "excluded by nodes_to_exclude"
            continue
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type == "Gather":
            idx, axis, act = 0, 1, None
            if attrs.get("axis", 0) != 0:
                report.skipped[node.name] = "Gather along an axis other than 0"
                continue
        elif node.op_type == "Gemm":
            if attrs.get("transA", 0):
                report.skipped[node.name] = "Gemm with transA"
                continue
            idx, axis, act = 1, (1 if attrs.get("transB", 0) else 0), node.input[0]
        else:
            idx, axis, act = 1, 0, node.input[0]
        name = node.input[idx] if len(node.input) > idx else ""
        init = inits.get(name)
        if init is None:
            continue  # activation x activation: nothing to quantize weight-only
        if init.data_type != _FLOAT or len(init.dims) != 2:
            report.skipped[node.name] = "weight is not a 2-D float32 constant"
            continue
        targets.append(Int4Target(node, idx, name, axis, act))
    return targets


def block_amax(w: np.ndarray, axis: int, block: int) -> np.ndarray:
    """Per-block ``max |w|``: shape of ``w`` with ``ceil(D / block)`` on ``axis``."""
    wt = np.moveaxis(w, axis, 0)
    d = wt.shape[0]
    nblk = -(-d // block)
    pad = nblk * block - d
    wp = np.pad(np.abs(wt), [(0, pad)] + [(0, 0)] * (wt.ndim - 1))
    amax = wp.reshape(nblk, block, *wt.shape[1:]).max(axis=1)
    return np.moveaxis(amax, 0, axis)


def expand_blocks(s: np.ndarray, axis: int, block: int, size: int) -> np.ndarray:
    """Repeat a per-block array ``block`` times along ``axis`` and crop to ``size``."""
    return np.take(np.repeat(s, block, axis=axis), np.arange(size), axis=axis)


def quantize_blocked(
    w: np.ndarray, axis: int, block: int, amax: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Blocked symmetric INT4 quantization.

    Args:
        w: 2-D float weight.
        axis: blocking axis.
        block: block size.
        amax: optional per-block amax (e.g. clipped); defaults to the block maximum.

    Returns:
        ``(q, scale)``: ``q`` int4 with ``w``'s shape, ``scale`` float32 per block.
    """
    w = w.astype(np.float32)
    amax = block_amax(w, axis, block) if amax is None else amax
    scale = INT4.scale_from_amax(amax)
    full = expand_blocks(scale, axis, block, w.shape[axis])
    return INT4.quantize(w, full), scale


def fake_quantize_blocked(w: np.ndarray, axis: int, block: int, amax=None) -> np.ndarray:
    """``dequantize(quantize_blocked(w))`` in float32."""
    q, scale = quantize_blocked(w, axis, block, amax)
    return q.astype(np.float32) * expand_blocks(scale, axis, block, w.shape[axis])


def _as_kn(w: np.ndarray, axis: int) -> np.ndarray:
    """Weight as (K, N) with K the reduction axis."""
    return w if axis == 0 else w.T


def awq_lite_scale(
    w_kn: np.ndarray, x: np.ndarray, block: int, grid: int = 11
) -> tuple[np.ndarray, float]:
    """Search the AWQ-lite per-input-channel scale ``s`` (shape ``(K,)``).

    ``s = act_mean**a / weight_mean**(1 - a)`` (normalized), for ``a`` on a grid in [0, 1];
    picks the one minimizing ``|| (x / s) Q(s * W) - x W ||^2`` on the samples ``x (n, K)``.
    ``a = 0`` with unit weights is plain RTN, so the result is never worse on these samples.
    """
    ref = x @ w_kn
    act_mean = np.abs(x).mean(axis=0) + 1e-8
    amax = block_amax(w_kn, 0, block)
    w_norm = np.abs(w_kn) / np.maximum(expand_blocks(amax, 0, block, w_kn.shape[0]), TINY_AMAX)
    w_mean = w_norm.mean(axis=1) + 1e-8
    best_s, best_a, best_err = np.ones(w_kn.shape[0], np.float32), 0.0, np.inf
    for a in np.linspace(0.0, 1.0, grid):
        s = act_mean**a / w_mean ** (1.0 - a) if a > 0 else np.ones_like(act_mean)
        s = s / np.sqrt(s.max() * s.min())
        s = np.clip(s, 1e-4, 1e4).astype(np.float32)
        wq = fake_quantize_blocked(w_kn * s[:, None], 0, block)
        err = float(np.square((x / s) @ wq - ref).mean())
        if err < best_err:
            best_s, best_a, best_err = s, float(a), err
    return best_s, best_a


def awq_clip_amax(
    w_kn: np.ndarray, x: np.ndarray | None, block: int, ratios: Sequence[float] | None = None
) -> np.ndarray:
    """Per-block clipped amax minimizing the output error ``sum_n (x_b . dW_b)^2``.

    Returns a ``(ceil(K / block), N)`` amax. Without activations the weight error is used.
    """
    ratios = ratios or [1.0 - 0.05 * i for i in range(11)]
    k, n = w_kn.shape
    nblk = -(-k // block)
    base = block_amax(w_kn, 0, block)
    best_err = np.full((nblk, n), np.inf)
    best = base.copy()
    for r in ratios:
        cand = base * r
        dw = fake_quantize_blocked(w_kn, 0, block, cand) - w_kn
        err = np.empty((nblk, n))
        for b in range(nblk):
            lo, hi = b * block, min((b + 1) * block, k)
            if x is None:
                err[b] = np.square(dw[lo:hi]).sum(axis=0)
            else:
                err[b] = np.square(x[:, lo:hi] @ dw[lo:hi]).sum(axis=0)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, cand, best)
    return best.astype(np.float32)


def pack_matmul_nbits(q_kn: np.ndarray, scale_kn: np.ndarray, block: int):
    """Pack a (K, N) int4 weight into onnxruntime ``MatMulNBits`` layout.

    Returns ``(B uint8 (N, n_blocks, block // 2), scales float32 (N * n_blocks,))`` with the
    default zero point 8 (values stored as ``q + 8``; even K index in the low nibble).
    """
    k, n = q_kn.shape
    nblk = -(-k // block)
    qu = q_kn.astype(np.int8).astype(np.int16) + 8
    qu = np.pad(qu, [(0, nblk * block - k), (0, 0)], constant_values=8).astype(np.uint8)
    cols = qu.T.reshape(n, nblk, block)
    packed = (cols[..., 0::2] | (cols[..., 1::2] << 4)).astype(np.uint8)
    return packed, scale_kn.T.reshape(-1).astype(np.float32)
