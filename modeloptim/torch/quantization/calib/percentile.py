"""Percentile amax from a histogram of ``|x|``."""

from __future__ import annotations

import numpy as np

__all__ = ["percentile_amax"]


def percentile_amax(hist: np.ndarray, edges: np.ndarray, percentile: float = 99.99) -> float:
    """Smallest amax below which ``percentile`` % of the collected ``|x|`` lie.

    The count inside the bin that crosses the threshold is treated as uniform, so the result
    is interpolated between that bin's edges (not rounded up to its upper edge).

    Args:
        hist: counts per bin, shape ``[num_bins]`` (float64).
        edges: bin edges, shape ``[num_bins + 1]``, starting at 0.
        percentile: in ``(0, 100]``.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a value in (0, 100], got {percentile!r}")
    total = hist.sum()
    target = total * percentile / 100.0
    cdf = np.cumsum(hist)
    idx = min(int(np.searchsorted(cdf, target, side="left")), len(hist) - 1)
    before = cdf[idx - 1] if idx > 0 else 0.0
    frac = (target - before) / hist[idx] if hist[idx] > 0 else 1.0
    return float(edges[idx] + min(max(frac, 0.0), 1.0) * (edges[idx + 1] - edges[idx]))
