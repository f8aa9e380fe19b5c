"""Reduce calibration statistics across the data-parallel group (torch.distributed).

When ``torch.distributed`` is initialized, every rank calibrates on its own shard of the data;
these helpers combine what the ranks collected so that all ranks end with identical
quantizers, equal to single-process calibration over the union of the shards: maxima are
reduced with ``MAX``, sums and counts with ``SUM``, histograms are re-binned to the largest
range and summed. With no process group (or world size 1) every helper is a no-op.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_cat",
    "all_reduce_max",
    "all_reduce_sum",
    "broadcast_",
    "is_distributed",
    "sync_histogram_calibrator",
    "sync_quantizer_stats",
]


def is_distributed(group: Any = None) -> bool:
    """True when a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def all_reduce_max(t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """In-place elementwise max over ranks; returns ``t``."""
    if is_distributed(group):
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t


def all_reduce_sum(t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """In-place elementwise sum over ranks; returns ``t``."""
    if is_distributed(group):
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def broadcast_(t: torch.Tensor, src: int = 0, group: Any = None) -> torch.Tensor:
    """Overwrite ``t`` with rank ``src``'s value (in place); returns ``t``."""
    if is_distributed(group):
        dist.broadcast(t, src=src, group=group)
    return t


def all_gather_cat(t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of all ranks (rank order); sizes may differ."""
    if not is_distributed(group):
        return t
    world = dist.get_world_size(group)
    n = torch.tensor([t.shape[0]], dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    rows = max(int(s) for s in sizes)
    padded = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded, group=group)
    return torch.cat([o[: int(s)] for o, s in zip(out, sizes, strict=True)], dim=0)


def sync_histogram_calibrator(cal: Any, group: Any = None) -> None:
    """Merge a :class:`HistogramCalibrator` over ranks (common range, summed counts)."""
    if not is_distributed(group):
        return
    import numpy as np

    rng = torch.tensor([float(cal._range) if cal._hist is not None else 0.0], dtype=torch.float64)
    all_reduce_max(rng, group)
    if float(rng) == 0.0:
        return
    if cal._hist is None:
        cal._hist = np.zeros(cal._num_bins)
        cal._range = float(rng)
    elif float(rng) > cal._range:
        cal._rebin(float(rng))
    counts = torch.from_numpy(np.ascontiguousarray(cal._hist)).double()
    all_reduce_sum(counts, group)
    cal._hist = counts.numpy().copy()
    cal._range = float(rng)


def sync_quantizer_stats(model: torch.nn.Module, group: Any = None) -> int:
    """Combine the calibrators of every quantizer in ``model`` across ranks.

    Call after the forward loop and before ``load_calib_amax``. Max calibrators reduce with
    MAX (every rank must have collected: the amax shapes must agree), histogram calibrators
    are merged as in :func:`sync_histogram_calibrator`.

    Returns:
        The number of calibrators synchronized.
    """
    if not is_distributed(group):
        return 0
    from ..calib import HistogramCalibrator, MaxCalibrator
    from ..nn import TensorQuantizer

    count = 0
    for name, q in sorted(
        ((n, m) for n, m in model.named_modules() if isinstance(m, TensorQuantizer)),
        key=lambda item: item[0],
    ):
        cal = q._calibrator
        if cal is None or not q.is_enabled:
            continue
        if isinstance(cal, MaxCalibrator):
            has = torch.tensor([0.0 if cal._amax is None else 1.0])
            all_reduce_min_flag = has.clone()
            dist.all_reduce(all_reduce_min_flag, op=dist.ReduceOp.MIN, group=group)
            if float(all_reduce_min_flag) == 0.0:
                if float(all_reduce_sum(has, group)) != 0.0:
                    raise RuntimeError(
                        f"{name}: some ranks calibrated this quantizer and others did not; "
                        "every rank must run the same layers"
                    )
                continue
            assert cal._amax is not None
            all_reduce_max(cal._amax, group)
            count += 1
        elif isinstance(cal, HistogramCalibrator):
            sync_histogram_calibrator(cal, group)
            count += 1
    return count
