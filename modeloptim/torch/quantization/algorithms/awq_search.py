"""AWQ searches as pure tensor math: per-channel scale search (lite) and clipping search.

**Scale search (awq_lite).** For a group of linear layers that read the same input ``X``
(``[T, in]``), a scale ``s`` per input channel is moved from activations into weights
(``X W^T = (X / s)(W s)^T``) so that the channels that matter most get more quantization
resolution. Following AWQ, ``s = x_mean**alpha / w_mean**(1 - alpha)`` (normalized by
``sqrt(max(s) * min(s))``) where ``x_mean`` is the mean ``|x|`` per channel over all
calibration tokens and ``w_mean`` the mean block-normalized ``|W|`` per input channel; the
``alpha`` in the grid that minimizes the summed output error
``sum_m ||X W_m^T - Qa(X / s) Qw_m(W_m s)^T||^2`` over the group wins. The error is measured
with the layers' real quantizers (``qdq_weight`` / ``qdq_act`` callables), so the same search
serves INT4 blocks, NVFP4 and W4A8.

**Clipping search (awq_clip).** Per output row and weight block, the clip ratio ``r`` in the
grid minimizing ``sum_t (X_blk (W - Q(clip(W, r * amax)))_row,blk^T)^2`` is chosen; clipping
the weight to ``r * amax`` and recalibrating gives exactly the fake quantization with amax
``r * amax`` (values beyond amax saturate either way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "AwqLiteResult",
    "awq_clip_search",
    "awq_lite_search",
    "awq_scale",
    "default_alpha_grid",
    "default_clip_grid",
    "weight_channel_mean",
]

QdqWeight = Callable[[torch.Tensor], torch.Tensor]
QdqAct = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_alpha_grid(steps: int = 20) -> list[float]:
    """``alpha`` values ``0, 1/steps, ..., 1``."""
    return [i / steps for i in range(steps + 1)]


def default_clip_grid(min_ratio: float = 0.5, steps: int = 10) -> list[float]:
    """Clip ratios from 1 down to ``min_ratio`` (``steps + 1`` values)."""
    return [1.0 - (1.0 - min_ratio) * i / steps for i in range(steps + 1)]


def weight_channel_mean(weights: Sequence[torch.Tensor], block_size: int | None) -> torch.Tensor:
    """Mean block-normalized ``|W|`` per input channel over all rows of all ``weights``.

    Args:
        weights: ``[out_m, in]`` tensors (same ``in``).
        block_size: normalize by the max of each block of this many input channels (``None``:
            by the max of each row).

    Returns:
        ``[in]`` float32.
    """
    w = torch.cat([wm.detach().float() for wm in weights], dim=0)
    rows, cols = w.shape
    bs = block_size or cols
    pad = (-cols) % bs
    wp = torch.nn.functional.pad(w.abs(), (0, pad)).reshape(rows, -1, bs)
    norm = wp / wp.amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return norm.reshape(rows, -1)[:, :cols].mean(dim=0)


def awq_scale(x_mean: torch.Tensor, w_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """AWQ per-channel scale for one ``alpha`` (``[in]`` float32, geometric mean ~1)."""
    s = x_mean.float().pow(alpha) / (w_mean.float().pow(1.0 - alpha) + 1e-12)
    s = s.clamp_min(1e-4)
    return s / (s.max() * s.min()).sqrt()


@dataclass
class AwqLiteResult:
    """Outcome of :func:`awq_lite_search`.

    Attributes:
        alpha: the chosen ``alpha``; ``None`` when no scaling (``s = 1``) was best.
        scale: ``[in]`` scale ``s`` (weights are multiplied by it, inputs divided).
        losses: output error for each ``alpha`` of the grid, in grid order (preceded by the
            error without scaling when ``include_identity``).
    """

    alpha: float | None
    scale: torch.Tensor
    losses: list[float] = field(default_factory=list)


@torch.no_grad()
def awq_lite_search(
    x: torch.Tensor,
    x_mean: torch.Tensor,
    weights: Sequence[torch.Tensor],
    qdq_weight: Sequence[QdqWeight],
    qdq_act: QdqAct | None = None,
    block_size: int | None = None,
    alphas: Sequence[float] | None = None,
    include_identity: bool = True,
    w_stat: torch.Tensor | None = None,
) -> AwqLiteResult:
    """Grid search of AWQ's ``alpha`` for a group of layers sharing the input ``x``.

    Args:
        x: ``[T, in]`` calibration inputs (a sample of tokens).
        x_mean: ``[in]`` mean ``|x|`` per channel over all calibration tokens.
        weights: the group's weights ``[out_m, in]``.
        qdq_weight: per weight, fake quantization of a (scaled) weight, calibrated on it.
        qdq_act: fake quantization ``(x / s, s) -> Qa(x / s)`` of the scaled input, or
            ``None`` when inputs are not quantized.
        block_size: weight block size for :func:`weight_channel_mean`.
        alphas: grid (default :func:`default_alpha_grid`).
        include_identity: also try ``s = 1`` (plain rounding) first, so the search never
            does worse than round-to-nearest on its data (AWQ's ``alpha = 0`` is not ``s = 1``).
        w_stat: per-channel weight statistic replacing :func:`weight_channel_mean` (e.g. the
            max ``|W|`` per input channel for SmoothQuant).

    Returns:
        The best :class:`AwqLiteResult` (ties keep the earlier candidate).
    """
    if len(weights) != len(qdq_weight) or not weights:
        raise ValueError("weights/qdq_weight: expected one fake-quant callable per weight")
    x = x.detach().float()
    grid = list(alphas) if alphas is not None else default_alpha_grid()
    w_mean = w_stat.float() if w_stat is not None else weight_channel_mean(weights, block_size)
    refs = [x @ w.detach().float().T for w in weights]
    best: AwqLiteResult | None = None
    losses: list[float] = []
    candidates: list[float | None] = [None, *grid] if include_identity else list(grid)
    for alpha in candidates:
        s = torch.ones_like(w_mean) if alpha is None else awq_scale(x_mean, w_mean, alpha)
        xs = x / s
        if qdq_act is not None:
            xs = qdq_act(xs, s).float()
        loss = 0.0
        for w, qdq, ref in zip(weights, qdq_weight, refs, strict=True):
            wq = qdq(w.detach().float() * s).float()
            loss += float(((xs @ wq.T) - ref).pow(2).sum())
        losses.append(loss)
        if best is None or loss < best.losses[0]:
            best = AwqLiteResult(alpha, s, [loss])
    assert best is not None
    return AwqLiteResult(best.alpha, best.scale, losses)


@torch.no_grad()
def awq_clip_search(
    x: torch.Tensor,
    weight: torch.Tensor,
    qdq_weight: QdqWeight,
    block_size: int | None,
    ratios: Sequence[float] | None = None,
    max_chunk: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (output row, block) clip-ratio search.

    Args:
        x: ``[T, in]`` calibration inputs of the layer (as the layer sees them).
        weight: ``[out, in]``.
        qdq_weight: fake quantization of a weight, calibrated on that weight.
        block_size: input channels per block (``None``: whole rows).
        ratios: grid of clip ratios (default :func:`default_clip_grid`); 1.0 is always tried.
        max_chunk: bound on ``T * out * blocks`` floats held at once.

    Returns:
        ``(clipped_weight [out, in], ratio [out, blocks])``.
    """
    w = weight.detach().float()
    x = x.detach().float().to(w.device)
    rows, cols = w.shape
    bs = block_size or cols
    pad = (-cols) % bs
    nb = (cols + pad) // bs
    xb = torch.nn.functional.pad(x, (0, pad)).reshape(x.shape[0], nb, bs)
    wb = torch.nn.functional.pad(w, (0, pad)).reshape(rows, nb, bs)
    amax = wb.abs().amax(dim=-1, keepdim=True)
    grid = sorted({1.0, *(ratios if ratios is not None else default_clip_grid())}, reverse=True)
    best_loss = torch.full((rows, nb), float("inf"), device=w.device)
    best_ratio = torch.ones(rows, nb, device=w.device)
    t_chunk = max(1, max_chunk // max(1, rows * nb))
    for r in grid:
        clipped = torch.maximum(torch.minimum(wb, r * amax), -r * amax)
        wq = qdq_weight(clipped.reshape(rows, -1)[:, :cols]).float()
        diff = w - wq
        db = torch.nn.functional.pad(diff, (0, pad)).reshape(rows, nb, bs)
        loss = torch.zeros(rows, nb, device=w.device)
        for t0 in range(0, xb.shape[0], t_chunk):
            out = torch.einsum("tnb,onb->ton", xb[t0 : t0 + t_chunk], db)
            loss += out.pow(2).sum(dim=0)
        better = loss < best_loss
        best_loss = torch.where(better, loss, best_loss)
        best_ratio = torch.where(better, torch.full_like(best_ratio, r), best_ratio)
    lim = best_ratio.unsqueeze(-1) * amax
    clipped = torch.maximum(torch.minimum(wb, lim), -lim).reshape(rows, -1)[:, :cols]
    return clipped.to(weight.dtype), best_ratio
