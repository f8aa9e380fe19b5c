"""KL-divergence threshold search over a histogram of ``|x|`` (the "entropy" calibration).

The algorithm of TensorRT's legacy entropy calibrator (also used by onnxruntime and MXNet):
for every candidate threshold of ``i`` histogram bins,

* the reference ``P`` is the first ``i`` bins with all the mass beyond them (the values the
  threshold clips) added to bin ``i - 1``;
* the candidate ``Q`` quantizes the *unclipped* first ``i`` bins into ``levels`` levels
  (``i // levels`` bins each, the remainder to the last level) and spreads each level's
  count uniformly over the bins where ``P`` is non-zero;
* both are smoothed (zero bins get a tiny ``eps``, taken from the non-zero ones) and the
  threshold with the smallest ``KL(P || Q)`` wins.

``Q`` must be built from the unclipped bins: built from ``P`` itself, ``Q == P`` exactly at
``i == levels`` (one bin per level), its KL is 0 and the search always picks the smallest
threshold (the bug this module replaces).
"""

from __future__ import annotations

import numpy as np

SMOOTH_EPS = 1e-4


def smooth(counts: np.ndarray, eps: float = SMOOTH_EPS) -> np.ndarray | None:
    """Give zero bins ``eps``, taken evenly from the non-zero bins; None if all are zero.

    Args:
        counts: ``(n,)`` non-negative histogram counts (float64).
        eps: mass given to each zero bin.
    """
    zeros = counts == 0
    n_zero = int(zeros.sum())
    n_nonzero = counts.size - n_zero
    if n_nonzero == 0:
        return None
    return counts + eps * zeros - (eps * n_zero / n_nonzero) * ~zeros


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """``KL(P || Q)`` of two ``(n,)`` non-negative arrays after normalizing each to sum 1."""
    p = p / p.sum()
    q = q / q.sum()
    mask = p > 0
    if np.any(q[mask] <= 0):
        return float("inf")
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def clipped_kl(hist: np.ndarray, nbins: int, levels: int, tail: float | None = None) -> float:
    """KL divergence of clipping ``hist`` at ``nbins`` bins and quantizing to ``levels`` levels.

    Args:
        hist: ``(num_bins,)`` float64 histogram of ``|x|``.
        nbins: candidate threshold in bins, ``levels <= nbins <= num_bins``.
        levels: number of quantization levels over ``[0, threshold]``.
        tail: ``hist[nbins:].sum()`` if already known.
    """
    sliced = hist[:nbins]
    p = sliced.copy()
    p[-1] += float(hist[nbins:].sum()) if tail is None else tail
    nonzero = p != 0
    width = nbins // levels
    starts = np.arange(levels) * width
    merged = np.add.reduceat(sliced, starts)  # the last level also takes the remainder bins
    counts = np.add.reduceat(nonzero.astype(np.float64), starts)
    per_bin = np.divide(merged, counts, out=np.zeros(levels), where=counts > 0)
    lengths = np.diff(np.append(starts, nbins))
    q = np.repeat(per_bin, lengths) * nonzero
    ps, qs = smooth(p), smooth(q)
    if ps is None or qs is None:
        return float("inf")
    return kl_divergence(ps, qs)


def kl_threshold_bins(hist: np.ndarray, levels: int = 128, stride: int = 1) -> int:
    """Number of bins (the threshold) with the smallest :func:`clipped_kl`.

    Args:
        hist: ``(num_bins,)`` histogram of ``|x|`` over ``[0, absmax]``.
        levels: quantization levels of the magnitude (128 for symmetric int8, 256 for uint8
            over a non-negative tensor).
        stride: step between candidate thresholds (``num_bins`` is always a candidate).

    Returns:
        ``i`` in ``[levels, num_bins]``; the threshold is ``i * absmax / num_bins``. A
        histogram with no more than ``levels`` bins, or an empty one, returns ``num_bins``.
    """
    hist = np.asarray(hist, dtype=np.float64)
    num_bins = hist.size
    if num_bins <= levels or hist.sum() == 0:
        return num_bins
    tails = np.append(np.cumsum(hist[::-1])[::-1], 0.0)  # tails[i] = hist[i:].sum()
    candidates = list(range(levels, num_bins + 1, stride))
    if candidates[-1] != num_bins:
        candidates.append(num_bins)
    best_i, best_kl = num_bins, float("inf")
    for i in candidates:
        kl = clipped_kl(hist, i, levels, float(tails[i]))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i
