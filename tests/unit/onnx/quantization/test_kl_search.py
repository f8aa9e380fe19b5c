"""The batched KL threshold search against a plain per-candidate loop over ``clipped_kl``."""

from __future__ import annotations

import numpy as np
import pytest

from modeloptim.onnx.quantization import kl_search
from modeloptim.onnx.quantization.kl_search import (
    clipped_kl,
    clipped_kl_batch,
    kl_threshold_bins,
)


def _loop_bins(hist, levels, stride=1):
    """The search as first written: every candidate scored by clipped_kl, first minimum wins."""
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.size
    if n <= levels or hist.sum() == 0:
        return n
    tails = np.append(np.cumsum(hist[::-1])[::-1], 0.0)
    cands = list(range(levels, n + 1, stride))
    if cands[-1] != n:
        cands.append(n)
    best, best_kl = n, float("inf")
    for i in cands:
        kl = clipped_kl(hist, i, levels, float(tails[i]))
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def _abs_hist(x, bins=2048, top=None):
    x = np.abs(x)
    hist, _ = np.histogram(x, bins, (0, top if top is not None else x.max()))
    return hist


def _histograms():
    """(name, hist) pairs: realistic activations and adversarial shapes."""
    rng = np.random.default_rng(0)
    out = [
        ("gauss", _abs_hist(rng.standard_normal(200_000))),
        ("gauss_outliers", _abs_hist(np.append(rng.standard_normal(100_000), [40.0, -35.0]))),
        ("relu_uniform", _abs_hist(np.maximum(rng.uniform(-1, 1, 50_000), 0))),
        ("cauchy_heavy_tail", _abs_hist(rng.standard_cauchy(100_000))),
        ("student3", _abs_hist(rng.standard_t(3, 30_000))),
        ("few_samples", _abs_hist(rng.standard_normal(300))),  # mostly empty bins
        ("empty_tail", _abs_hist(rng.standard_normal(50_000), top=20.0)),  # mass in ~1/5
        ("laplace", _abs_hist(rng.laplace(size=80_000))),
    ]
    spikes = np.zeros(2048, np.int64)
    spikes[[0, 3, 700, 2047]] = [10_000, 5, 1, 2]
    out.append(("spikes", spikes))
    for pos in (0, 1000, 2047):
        one = np.zeros(2048, np.int64)
        one[pos] = 12345
        out.append((f"one_bin_{pos}", one))
    two = np.zeros(2048, np.int64)
    two[[5, 2047]] = [1, 1]
    out.append(("two_ones", two))
    big = rng.integers(0, 3, 2048) * rng.integers(10**9, 10**10, 2048)
    out.append(("huge_counts_sparse", big))
    flat = np.full(2048, 7)
    out.append(("flat", flat))
    steps = np.repeat([1000, 0, 1, 0, 3], [300, 500, 200, 900, 148])
    out.append(("steps", steps))
    return out


HISTS = _histograms()


@pytest.mark.parametrize(("name", "hist"), HISTS, ids=[n for n, _ in HISTS])
@pytest.mark.parametrize("levels", [128, 256])
def test_same_bin_as_loop_2048_bins(name, hist, levels):
    assert kl_threshold_bins(hist, levels) == _loop_bins(hist, levels), name


@pytest.mark.parametrize(
    ("bins", "levels", "stride"),
    [(96, 8, 1), (200, 16, 1), (512, 8, 3), (1000, 128, 1), (2048, 128, 7), (2048, 16, 64)],
)
def test_same_bin_as_loop_small_levels_and_strides(bins, levels, stride):
    rng = np.random.default_rng(bins + levels + stride)
    cases = [
        _abs_hist(np.append(rng.standard_normal(5000), rng.standard_normal(5) * 8), bins),
        _abs_hist(rng.standard_cauchy(3000), bins),
        _abs_hist(rng.standard_normal(40), bins),
        rng.integers(0, 4, bins) * (rng.random(bins) < 0.3),
    ]
    for hist in cases:
        assert kl_threshold_bins(hist, levels, stride) == _loop_bins(hist, levels, stride)


def test_non_integer_histograms_fall_back_to_the_loop_exactly():
    rng = np.random.default_rng(3)
    for _ in range(3):
        hist = rng.random(300) * (rng.random(300) < 0.6)  # fractional, many zeros
        _, err = clipped_kl_batch(hist, np.arange(16, 301), 16)
        assert np.all(np.isinf(err))  # outside the batch's proven range: scored exactly
        assert kl_threshold_bins(hist, 16) == _loop_bins(hist, 16)


@pytest.mark.parametrize(("name", "hist"), HISTS, ids=[n for n, _ in HISTS])
def test_batch_kl_within_its_bound_of_clipped_kl(name, hist):
    hist = hist.astype(np.float64)
    cands = np.arange(128, hist.size + 1)
    kl, err = clipped_kl_batch(hist, cands, 128)
    exact = np.array([clipped_kl(hist, int(i), 128) for i in cands])
    # Integer counts: every candidate is covered (those where clipped_kl is inf as inf).
    assert np.isfinite(err).all(), name
    np.testing.assert_array_equal(np.isinf(kl), np.isinf(exact))
    finite = np.isfinite(exact)
    assert finite.any()
    diff = np.abs(kl[finite] - exact[finite])
    np.testing.assert_array_less(diff, err[finite])
    # The bound is loose by design but small: few candidates need the exact re-score.
    assert err.max() < 1e-8
    assert diff.max() < 1e-12


def test_few_candidates_rescored(monkeypatch):
    calls = []
    real = kl_search.clipped_kl
    monkeypatch.setattr(kl_search, "clipped_kl", lambda *a: calls.append(a[1]) or real(*a))
    rng = np.random.default_rng(8)
    hist = _abs_hist(rng.standard_normal(100_000))
    got = kl_search.kl_threshold_bins(hist, 128)
    assert got in calls
    assert 1 <= len(calls) <= 20  # of 1921 candidates


def test_batch_rejects_out_of_range_candidates():
    with pytest.raises(ValueError, match="nbins: expected thresholds in"):
        clipped_kl_batch(np.ones(64), np.array([4, 65]), 8)


def test_loop_reference_function_matches():
    rng = np.random.default_rng(9)
    hist = _abs_hist(rng.standard_normal(20_000), 512)
    assert kl_search._kl_threshold_bins_loop(hist, 16, 2) == _loop_bins(hist, 16, 2)
