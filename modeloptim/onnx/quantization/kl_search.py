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

Speed: :func:`clipped_kl` costs O(``i``) numpy calls' worth of work per candidate (about 50 us,
0.1 s for the 1921 candidates of a 2048-bin histogram). :func:`kl_threshold_bins` instead
scores every candidate at once with :func:`clipped_kl_batch` (prefix sums, per-level sums, a
series for the smoothed ``P`` log term; a few ms), which also returns a bound on its rounding
difference to :func:`clipped_kl`; only the candidates whose bound interval reaches the best
one are re-scored with :func:`clipped_kl`, so the chosen bin is the one the plain loop picks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SMOOTH_EPS = 1e-4
# Series for sum((h - a) log(h - a)) over bins h >= 1 of an integer histogram: terms decay as
# (a / h)^m, a = eps * zeros / nonzeros; used while a / min(h) <= _SERIES_MAX_RATIO.
_SERIES_TERMS = 40
_SERIES_MAX_RATIO = 0.5
# Rounding bound of the batched KL against clipped_kl, in units of n * 2^-52 * magnitude;
# deliberately loose (tests check the observed difference stays far below it).
_ROUNDING_FACTOR = 16.0
_EXACT_INTEGERS = 2.0**52  # integer-valued float64 sums stay exact below this


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


def _tails(hist: np.ndarray) -> np.ndarray:
    """``(n + 1,)`` with ``tails[i] = hist[i:].sum()`` (the summation clipped_kl's callers use)."""
    return np.append(np.cumsum(hist[::-1])[::-1], 0.0)


def _prefix(values: np.ndarray) -> np.ndarray:
    """``(n + 1,)`` prefix sums along the last axis: ``out[..., k] = values[..., :k].sum()``."""
    zero = np.zeros((*values.shape[:-1], 1))
    return np.concatenate([zero, np.cumsum(values, axis=-1)], axis=-1)


def _xlogx(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def _series_terms(ratio: float) -> int:
    """Terms of ``sum_r x^r / r`` (``x <= ratio``) whose remainder is below float64 rounding."""
    if ratio <= 0.0:
        return 1
    return int(min(_SERIES_TERMS, max(1, np.ceil(np.log(2.0**-60) / np.log(ratio)))))


def _power_rows(x: np.ndarray, terms: int) -> np.ndarray:
    """``(terms, *x.shape)`` with row ``r`` holding ``x ** (r + 1)``."""
    return np.cumprod(np.broadcast_to(x, (terms, *np.shape(x))), axis=0)


@dataclass
class _Levels:
    """Sums over the first ``levels - 1`` levels (all but the last) for each level width.

    The first ``levels - 1`` levels of candidate ``i`` depend on ``i`` only through its width
    ``i // levels``; the last level (which holds bin ``i - 1`` and the remainder) is per
    candidate. With ``M`` a level's mass, ``c`` its non-zero bins, ``b = M / c``:
    ``log_m = sum M log b``, ``log_c = sum c log b``, ``inv_m[r] = sum M b^-(r+1)``,
    ``inv_c[r] = sum c b^-(r+1)``, ``count = sum c``, ``b_min = min b``; all ``(widths,)``
    (``inv_*``: ``(terms, widths)``).
    """

    log_m: np.ndarray
    log_c: np.ndarray
    inv_m: np.ndarray
    inv_c: np.ndarray
    count: np.ndarray
    b_min: np.ndarray
    magnitude: np.ndarray  # sum |M log b|

    @classmethod
    def build(
        cls, c_sum: np.ndarray, c_nz: np.ndarray, widths: np.ndarray, levels: int, terms: int
    ) -> _Levels:
        """Sums of the levels but the last, for each width in ``(widths,)``, ``terms`` powers."""
        # (widths, levels) boundaries: level j spans [j w, (j + 1) w).
        bounds = widths[:, None] * np.arange(levels)
        mass = np.diff(c_sum[bounds], axis=1)  # exact: integer sums below 2^52
        count = np.diff(c_nz[bounds], axis=1)
        filled = count > 0
        per_bin = np.divide(mass, count, out=np.ones_like(mass), where=filled)
        log_b = np.log(per_bin)  # 0 on empty levels, whose mass and count are 0
        inv = _power_rows(1.0 / per_bin, terms) * filled
        return cls(
            log_m=(mass * log_b).sum(1),
            log_c=(count * log_b).sum(1),
            inv_m=(inv * mass).sum(2),
            inv_c=(inv * count).sum(2),
            count=count.sum(1),
            b_min=np.where(filled, per_bin, np.inf).min(1, initial=np.inf),
            magnitude=np.abs(mass * log_b).sum(1),
        )


def clipped_kl_batch(
    hist: np.ndarray, nbins: np.ndarray, levels: int, tails: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clipped_kl` of many candidate thresholds at once, with a rounding bound.

    With ``P``/``Q`` the smoothed distributions of :func:`clipped_kl` (``P`` sums to the
    histogram's total ``S_p``, ``Q`` to ``S_q = hist[:i].sum()``) and every ``P`` bin positive,
    ``KL = (sum P log P - sum P log Q) / S_p + log(S_q / S_p)``. Zero bins (``P = Q = eps``)
    cancel. On a non-zero bin ``P = h - a`` and, within a level of mass ``M`` over ``c``
    non-zero bins, ``Q = M / c - u`` (``a``, ``u``: the smoothing shifts). Expanding
    ``log(h - a)`` and ``log(M / c - u)`` in powers of ``a / h`` and ``u c / M`` turns both
    sums into prefix sums of ``h log h``, ``log h``, ``h^-r`` over the bins and sums over
    the levels that depend only on the level width; only the last level (bin ``i - 1`` and
    the remainder) is summed per candidate.

    Candidates this does not cover get ``err = inf`` (callers score them with
    :func:`clipped_kl`): histograms that are not non-negative integer counts (below 2^52 in
    total), a ``P`` with no non-zero bin, smoothing shifts above half the smallest bin or
    level value.
    A ``Q`` with no non-zero bin gets ``kl = inf, err = 0`` (what clipped_kl returns).

    Args:
        hist: ``(n,)`` histogram of ``|x|`` (float64 or integer counts).
        nbins: ``(m,)`` candidate thresholds in bins, each in ``[levels, n]``.
        levels: quantization levels over ``[0, threshold]``.
        tails: ``(n + 1,)`` ``hist[i:].sum()`` per ``i`` if already computed.

    Returns:
        ``(kl, err)``, both ``(m,)`` float64: ``|kl - clipped_kl(hist, i, levels)| <= err``.
    """
    h = np.asarray(hist, dtype=np.float64)
    cand = np.asarray(nbins, dtype=np.int64)
    n, m = h.size, cand.size
    if m and (cand.min() < levels or cand.max() > n):
        raise ValueError(f"nbins: expected thresholds in [{levels}, {n}], got {cand}")
    kl = np.full(m, np.nan)
    err = np.full(m, np.inf)
    if (
        m == 0
        or not np.all(np.isfinite(h))
        or np.any(h < 0)
        or np.any(h != np.round(h))
        or h.sum() >= _EXACT_INTEGERS
    ):
        return kl, err
    tails = _tails(h) if tails is None else np.asarray(tails, dtype=np.float64)
    nonzero = h != 0
    c_sum = _prefix(h)
    c_nz = _prefix(nonzero.astype(np.float64))
    last = cand - 1
    h_last = h[last]
    p_last = h_last + tails[cand]  # P's last bin takes the clipped mass
    last_nz = p_last != 0
    width = cand // levels
    widths, w_idx = np.unique(width, return_inverse=True)
    tail_start = width * (levels - 1)  # the last level: [tail_start, i)
    tail_mass = c_sum[cand] - c_sum[tail_start]
    tail_count = c_nz[last] - c_nz[tail_start] + last_nz
    tail_q = tail_mass > 0  # Q is non-zero on P's non-zero bins of levels with mass
    # Smoothing shifts need the counts of every level; the per-width sums give the rest.
    probe = _Levels.build(c_sum, c_nz, widths, levels, 1)
    nnz_p = probe.count[w_idx] + tail_count
    nnz_q = probe.count[w_idx] + tail_count * tail_q
    with np.errstate(divide="ignore", invalid="ignore"):
        a_p = SMOOTH_EPS * (cand - nnz_p) / nnz_p
        a_q = SMOOTH_EPS * (cand - nnz_q) / nnz_q
        tail_b = np.where(tail_count > 0, tail_mass / np.maximum(tail_count, 1.0), 0.0)
        tail_level = tail_b - a_q  # smoothed Q on the last level's non-zero bins
        # Smallest non-zero P bin: min over the non-zero h[:i - 1] and P's last bin.
        min_before = np.append(np.inf, np.minimum.accumulate(np.where(nonzero, h, np.inf)))
        p_min = np.minimum(min_before[last], np.where(last_nz, p_last, np.inf))
        ratio_p = a_p / p_min
        ratio_q = a_q / probe.b_min[w_idx]
        ok = (
            (nnz_p > 0)
            & (nnz_q > 0)
            & (ratio_p <= _SERIES_MAX_RATIO)
            & (ratio_q <= _SERIES_MAX_RATIO)
            & (~tail_q | (tail_level > 0.5 * tail_b))
        )
    # No non-zero Q bin: clipped_kl is inf (its smoothing of Q fails); counts are exact.
    empty_q = (nnz_p > 0) & (nnz_q == 0)
    kl[empty_q], err[empty_q] = np.inf, 0.0
    if not np.any(ok):
        return kl, err
    terms = _series_terms(float(max(ratio_p[ok].max(), ratio_q[ok].max())))
    lv = _Levels.build(c_sum, c_nz, widths, levels, terms)
    k = np.arange(1, terms + 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # sum over non-zero h[:i - 1] of (h - a) log(h - a)
        #   = sum h log h - a (sum log h + count) + sum_r a^(r+1) sum h^-r / (r (r + 1)).
        safe = np.where(nonzero, h, 1.0)
        logs = np.log(safe)
        t0 = _prefix(h * logs)[last]
        t1 = _prefix(logs)[last]
        inv_h = _prefix(_power_rows(1.0 / safe, terms) * nonzero)[:, last]
        a_pow = _power_rows(a_p, terms)
        series_p = np.sum(a_pow * a_p * inv_h / (k * (k + 1)), axis=0)
        cnt_before = c_nz[last]
        p_log_p = t0 - a_p * (t1 + cnt_before) + series_p
        p_log_p += np.where(last_nz, _xlogx(p_last - a_p), 0.0)
        # Levels but the last: sum (M - c a) log(M / c - u)
        #   = sum M log b - a sum c log b - sum_r u^r / r (sum M b^-r - a sum c b^-r).
        u_pow = _power_rows(a_q, terms)
        inv_m, inv_c = lv.inv_m[:, w_idx], lv.inv_c[:, w_idx]
        series_q = np.sum(u_pow / k * (inv_m - a_p * inv_c), axis=0)
        head = lv.log_m[w_idx] - a_p * lv.log_c[w_idx] - series_q
        # The last level: its bins but i - 1, then P's last bin.
        q_last = np.where(tail_q, tail_level, SMOOTH_EPS)
        tail_p = (tail_mass - h_last) - (tail_count - last_nz) * a_p
        tail = np.where(tail_q, tail_p * np.log(np.where(tail_q, tail_level, 1.0)), 0.0)
        tail += np.where(last_nz, (p_last - a_p) * np.log(q_last), 0.0)
        s_p = c_sum[last] + p_last
        s_q = c_sum[cand]
        value = (p_log_p - head - tail) / s_p + np.log(s_q / s_p)
        # What was summed (here and in clipped_kl), for the rounding bound.
        magnitude = (
            (np.abs(t0) + np.abs(a_p * t1) + lv.magnitude[w_idx] + np.abs(tail) + np.abs(p_log_p))
            / s_p
            + np.abs(np.log(s_q / s_p))
            + 1.0
        )
        remainder = (
            (a_p * cnt_before * ratio_p**terms + (tail_mass + s_q) * ratio_q**terms)
            / (1.0 - _SERIES_MAX_RATIO)
            / s_p
        )
        bound = _ROUNDING_FACTOR * (n + levels) * 2.0**-52 * magnitude + remainder
    kl[ok] = value[ok]
    err[ok] = bound[ok]
    return kl, err


def kl_threshold_bins(hist: np.ndarray, levels: int = 128, stride: int = 1) -> int:
    """Number of bins (the threshold) with the smallest :func:`clipped_kl`.

    Scores all candidates with :func:`clipped_kl_batch`, then re-scores with
    :func:`clipped_kl` every candidate that could be the best within the batch's rounding
    bound (and those the batch does not cover), in increasing order: the result is the bin
    :func:`_kl_threshold_bins_loop` (the plain loop) returns.

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
    tails = _tails(hist)
    candidates = _candidates(num_bins, levels, stride)
    approx, err = clipped_kl_batch(hist, candidates, levels, tails)
    covered = np.isfinite(err)
    finite = covered & np.isfinite(approx)
    reach = np.min(approx[finite] + err[finite]) if np.any(finite) else np.inf
    rescore = candidates[~covered | (finite & (approx - err <= reach))]
    best_i, best_kl = num_bins, float("inf")
    for i in rescore.tolist():
        kl = clipped_kl(hist, i, levels, float(tails[i]))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i


def _candidates(num_bins: int, levels: int, stride: int) -> np.ndarray:
    """Candidate thresholds ``levels, levels + stride, ...`` and always ``num_bins``."""
    candidates = list(range(levels, num_bins + 1, stride))
    if candidates[-1] != num_bins:
        candidates.append(num_bins)
    return np.asarray(candidates, dtype=np.int64)


def _kl_threshold_bins_loop(hist: np.ndarray, levels: int = 128, stride: int = 1) -> int:
    """The plain per-candidate loop over :func:`clipped_kl` (reference and benchmark baseline)."""
    hist = np.asarray(hist, dtype=np.float64)
    num_bins = hist.size
    if num_bins <= levels or hist.sum() == 0:
        return num_bins
    tails = _tails(hist)
    best_i, best_kl = num_bins, float("inf")
    for i in _candidates(num_bins, levels, stride).tolist():
        kl = clipped_kl(hist, i, levels, float(tails[i]))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i
