"""Algorithms ``awq_lite``, ``awq_clip`` and ``awq_full`` (activation-aware weight quantization).

Steps, for any architecture (layers are grouped by the tensor they read, found in the fx
graph by :func:`modeloptim.torch.trace.shared_input_groups`, not by their names):

1. the first calibration call is traced: groups of quantized linear layers sharing an input;
2. one full-precision pass over the calibration data collects, per group, the mean and max
   ``|x|`` per channel and a fixed-size deterministic sample of input rows (:mod:`.stats`);
3. ``awq_lite``: per group the AWQ ``alpha`` grid (plus "no scaling") is searched on the
   sample with the layers' real weight/input quantizers (:func:`.awq_search.awq_lite_search`);
   weights are multiplied by the chosen scale ``s`` and ``1/s`` is folded into the layer that
   produced the input (a norm or linear, verified exact) or else set as the members'
   ``input_quantizer.pre_quant_scale`` (the same tensor for every member: shared scale);
   ``awq_clip``: per layer, output row and weight block, the clip ratio minimizing the output
   error is searched and the weight is clipped (:func:`.awq_search.awq_clip_search`);
   ``awq_full``: lite, then clip on the scaled layers;
4. max calibration of all quantizers (weights, inputs after scaling, anything else enabled);
   then the members of each group get one input amax (the max of theirs), as the fused
   kernels of a serving engine use it (:func:`.sharing.share_input_amax`).

Works with INT4 blocks (``INT4_AWQ_CFG``), NVFP4 (``NVFP4_AWQ_*``) and W4A8
(``W4A8_AWQ_BETA_CFG``, a SequentialQuantizer on weights plus FP8 inputs).

Note: a weight-only layer whose scale cannot be folded gets an input quantizer that is enabled
with quantization off (it only applies ``pre_quant_scale``); re-running ``mtq.calibrate``
keeps that state.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from modeloptim.torch.trace.shared_group import SharedInputGroup

from ..formats.granularity import PerTensor
from .awq_search import awq_clip_search, awq_lite_search, default_clip_grid
from .quant_utils import (
    discover_groups,
    enable_pre_quant_scale,
    qdq_fresh,
    qdq_with_amax,
    quant_linear_layers,
    restore_scale_only,
    weight_block_size,
)
from .registry import AlgorithmConfig, ForwardLoop, calibration_algorithms
from .sharing import fold_scale_into_producer, get_weight_2d, set_weight_2d, share_input_amax
from .stats import GroupStats, collect_group_stats

__all__ = ["AwqClipConfig", "AwqFullConfig", "AwqLiteConfig", "awq_clip", "awq_full", "awq_lite"]


class _AwqBase(AlgorithmConfig):
    max_tokens: int = Field(
        default=1024,
        ge=16,
        description="calibration token rows sampled per layer group for searches",
    )
    seed: int = Field(default=0, description="seed of the token-row sampling")


class AwqLiteConfig(_AwqBase):
    """``awq_lite``: per-group scale search over ``alpha`` in steps of ``alpha_step``."""

    method: Literal["awq_lite"] = "awq_lite"
    alpha_step: float = Field(default=0.1, gt=0.0, le=1.0)


class AwqClipConfig(_AwqBase):
    """``awq_clip``: per row/block clip search from 1 down to ``min_clip_ratio``."""

    method: Literal["awq_clip"] = "awq_clip"
    max_tokens: int = Field(default=512, ge=16)
    min_clip_ratio: float = Field(default=0.5, gt=0.0, lt=1.0)
    clip_steps: int = Field(default=10, ge=1)


class AwqFullConfig(AwqLiteConfig):
    """``awq_full``: ``awq_lite`` then ``awq_clip`` (clip options as in :class:`AwqClipConfig`)."""

    method: Literal["awq_full"] = "awq_full"  # type: ignore[assignment]
    min_clip_ratio: float = Field(default=0.5, gt=0.0, lt=1.0)
    clip_steps: int = Field(default=10, ge=1)
    clip_max_tokens: int = Field(default=512, ge=16)


def _alpha_grid(step: float) -> list[float]:
    n = max(1, round(1.0 / step))
    return [min(1.0, i * step) for i in range(n + 1)]


def _act_qdq(group: SharedInputGroup, st: GroupStats) -> Any:
    """Fake quantization of the scaled shared input, or None when inputs are not quantized."""
    iq = group.modules[0].input_quantizer
    if not iq.is_enabled or not iq._if_quant:
        return None
    per_tensor = isinstance(iq.format.amax_granularity, PerTensor)

    def qdq(xs: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # The input amax after scaling is known exactly from the per-channel maxima.
        amax = (st.abs_max.to(s.device) / s).amax() if per_tensor else None
        return qdq_with_amax(iq, xs, amax)

    return qdq


@torch.no_grad()
def _apply_scale(group: SharedInputGroup, s: torch.Tensor) -> str:
    """Multiply weights by ``s`` and the input by ``1/s`` (fold or pre_quant_scale)."""
    for m in group.modules:
        w = get_weight_2d(m)
        set_weight_2d(m, w.float() * s.to(w.device))
    inv = (1.0 / s).float()
    if fold_scale_into_producer(group, inv):
        return "folded into " + str(group.producer)
    for m in group.modules:
        enable_pre_quant_scale(m.input_quantizer, inv)
    return "pre_quant_scale"


@torch.no_grad()
def _lite_group(group: SharedInputGroup, st: GroupStats, alphas: list[float]) -> dict[str, Any]:
    weights = [get_weight_2d(m).float() for m in group.modules]
    dev = weights[0].device
    qdqs = [partial(qdq_fresh, m.weight_quantizer) for m in group.modules]
    res = awq_lite_search(
        st.rows.to(dev),
        st.abs_mean.to(dev),
        weights,
        qdqs,
        _act_qdq(group, st),
        weight_block_size(group.modules[0].weight_quantizer),
        alphas,
    )
    where = "unchanged"
    if res.alpha is not None:
        where = _apply_scale(group, res.scale)
    return {"layers": group.names, "alpha": res.alpha, "scale": res.scale, "applied": where}


@torch.no_grad()
def _clip_group(
    group: SharedInputGroup, rows: torch.Tensor, ratios: list[float], max_rows: int
) -> None:
    rows = rows[:max_rows]
    for m in group.modules:
        rows = rows.to(get_weight_2d(m).device)
        pqs = m.input_quantizer.pre_quant_scale
        x = rows * pqs.to(rows.device, rows.dtype) if pqs is not None else rows
        clipped, _ = awq_clip_search(
            x,
            get_weight_2d(m).float(),
            partial(qdq_fresh, m.weight_quantizer),
            weight_block_size(m.weight_quantizer),
            ratios,
        )
        set_weight_2d(m, clipped)


def _finish(
    model: nn.Module, forward_loop: ForwardLoop | None, groups: list[SharedInputGroup] | None
) -> None:
    from .max import max_calibrate

    max_calibrate(model, forward_loop, None)
    restore_scale_only(model)
    share_input_amax(groups or [])


def _prepare(model: nn.Module, forward_loop: ForwardLoop | None, name: str, rows: int) -> Any:
    if forward_loop is None:
        raise ValueError(f"forward_loop: algorithm {name!r} needs calibration data")
    if not quant_linear_layers(model):
        return None, None
    groups = discover_groups(model, forward_loop)
    stats = collect_group_stats(model, groups, forward_loop, max_rows=rows, desc=f"{name} stats")
    return groups, stats


def _run_lite(groups: list[SharedInputGroup], stats: list[GroupStats], step: float) -> list:
    alphas = _alpha_grid(step)
    return [
        _lite_group(g, st, alphas)
        for g, st in tqdm(
            list(zip(groups, stats, strict=True)),
            desc="awq_lite search",
            unit="group",
            leave=False,
        )
    ]


@calibration_algorithms.register("awq_lite", AwqLiteConfig, needs_forward_loop=True)
def awq_lite(model: nn.Module, forward_loop: ForwardLoop | None, config: Any) -> None:
    """AWQ-lite: activation-aware per-channel scale search, then max calibration."""
    cfg = config if isinstance(config, AwqLiteConfig) else AwqLiteConfig()
    groups, stats = _prepare(model, forward_loop, "awq_lite", cfg.max_tokens)
    if groups:
        model.__dict__["_awq_lite_report"] = _run_lite(groups, stats, cfg.alpha_step)
    _finish(model, forward_loop, groups)


@calibration_algorithms.register("awq_clip", AwqClipConfig, needs_forward_loop=True)
def awq_clip(model: nn.Module, forward_loop: ForwardLoop | None, config: Any) -> None:
    """AWQ clip search on each layer's weight blocks, then max calibration."""
    cfg = config if isinstance(config, AwqClipConfig) else AwqClipConfig()
    groups, stats = _prepare(model, forward_loop, "awq_clip", cfg.max_tokens)
    ratios = default_clip_grid(cfg.min_clip_ratio, cfg.clip_steps)
    for g, st in tqdm(list(zip(groups or [], stats or [], strict=True)), desc="awq_clip search"):
        _clip_group(g, st.rows, ratios, cfg.max_tokens)
    _finish(model, forward_loop, groups)


@calibration_algorithms.register("awq_full", AwqFullConfig, needs_forward_loop=True)
def awq_full(model: nn.Module, forward_loop: ForwardLoop | None, config: Any) -> None:
    """AWQ-lite scale search followed by the clip search on the scaled layers."""
    cfg = config if isinstance(config, AwqFullConfig) else AwqFullConfig()
    groups, stats = _prepare(
        model, forward_loop, "awq_full", max(cfg.max_tokens, cfg.clip_max_tokens)
    )
    if groups:
        report = _run_lite(groups, stats, cfg.alpha_step)
        model.__dict__["_awq_lite_report"] = report
        ratios = default_clip_grid(cfg.min_clip_ratio, cfg.clip_steps)
        for g, st, rep in tqdm(
            list(zip(groups, stats, report, strict=True)), desc="awq_clip search"
        ):
            # Rows as the layers now see them: divided by the scale (folded or pre-scaled).
            folded = rep["applied"].startswith("folded")
            rows = st.rows / rep["scale"].cpu() if folded else st.rows
            _clip_group(g, rows, ratios, cfg.clip_max_tokens)
    _finish(model, forward_loop, groups)
