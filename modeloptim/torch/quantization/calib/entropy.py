"""Entropy (KL-divergence) amax search, TensorRT style, on a histogram of ``|x|``.

For each candidate threshold bin ``i`` (``start_bin, start_bin + stride, ...``):

1. ``P`` = the first ``i`` bins, with every count beyond ``i`` added to bin ``i - 1``
   (the distribution after clipping at ``edges[i]``);
2. ``Q`` = the first ``i`` bins (without the clipped tail) merged into
   ``nbins = 2**(num_bits - 1 + unsigned)`` equal groups of bins (the quantization levels),
   each group's mass spread evenly over the group's non-empty bins (empty bins stay empty);
3. divergence ``KL(P || Q)`` of the normalized distributions (``inf`` where ``Q`` has no
   mass under ``P``, so such thresholds are never chosen).

The threshold with the smallest divergence gives ``amax = edges[i]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["entropy_amax", "kl_divergence"]


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """``sum p log(p / q)`` of two (unnormalized) distributions; ``inf`` if ``q`` misses mass."""
    p = p / p.sum()
    qs = q.sum()
    if qs <= 0:
        return float("inf")
    q = q / qs
    m = p > 0
    if np.any(q[m] <= 0):
        return float("inf")
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def _quantized_distribution(p: np.ndarray, nbins: int) -> np.ndarray:
    i = len(p)
    # Bin j belongs to level floor(j * nbins / i) (levels of equal width in bins).
    level = (np.arange(i) * nbins) // i
    nonzero = p > 0
    mass = np.bincount(level, weights=p, minlength=nbins)
    count = np.bincount(level, weights=nonzero.astype(np.float64), minlength=nbins)
    per_bin = np.divide(mass, count, out=np.zeros_like(mass), where=count > 0)
    return np.where(nonzero, per_bin[level], 0.0)


def entropy_amax(
    hist: np.ndarray,
    edges: np.ndarray,
    num_bits: int = 8,
    unsigned: bool = False,
    start_bin: int = 128,
    stride: int = 1,
) -> float:
    """The amax minimizing ``KL(P || Q)`` (see module docstring).

    Args:
        hist: counts per bin ``[num_bins]``.
        edges: bin edges ``[num_bins + 1]``.
        num_bits: integer bits of the quantizer.
        unsigned: unsigned quantizer (one more level bit).
        start_bin: first candidate threshold bin.
        stride: step between candidates.
    """
    if not isinstance(num_bits, int):
        raise ValueError(f"num_bits: method='entropy' needs integer num_bits, got {num_bits!r}")
    if stride < 1:
        raise ValueError(f"stride: expected >= 1, got {stride!r}")
    n = len(hist)
    nbins = 1 << (num_bits - 1 + int(unsigned))
    start = max(1, min(start_bin, n))
    best_i, best_kl = n, float("inf")
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    for i in range(start, n + 1, stride):
        p = hist[:i].copy()
        p[i - 1] += tail[i]
        if p.sum() <= 0:
            continue
        kl = kl_divergence(p, _quantized_distribution(hist[:i], nbins))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return float(edges[best_i])
