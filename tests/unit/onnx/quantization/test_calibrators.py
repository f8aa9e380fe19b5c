"""Activation calibrators against independent numpy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modeloptim.onnx.quantization.calibrators import CALIBRATORS
from modeloptim.onnx.quantization.kl_search import clipped_kl, kl_threshold_bins


def _feed(calib, chunks):
    for p in range(calib.passes):
        for c in chunks:
            calib.observe("t", c, p)
    return calib.amax()["t"]


def test_max_is_global_abs_max():
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    chunks[1][5] = -9.5
    assert _feed(CALIBRATORS.create("max"), chunks) == pytest.approx(9.5)


def test_percentile_matches_numpy_within_one_bin():
    rng = np.random.default_rng(1)
    chunks = [rng.standard_normal(20000).astype(np.float32) for _ in range(2)]
    got = _feed(CALIBRATORS.create("percentile", percentile=99.0), chunks)
    ref = np.percentile(np.abs(np.concatenate(chunks)), 99.0)
    bin_width = np.abs(np.concatenate(chunks)).max() / 2048
    assert abs(got - ref) <= bin_width


def test_entropy_clips_rare_outliers_but_not_the_bulk():
    rng = np.random.default_rng(2)
    bulk = rng.uniform(-1, 1, 200000).astype(np.float32)
    outliers = np.array([40.0, -35.0], np.float32)
    got = _feed(CALIBRATORS.create("entropy"), [bulk, outliers])
    assert 0.9 < got < 5.0  # far below the 40 outlier, covers the uniform bulk


def test_unknown_method_named():
    with pytest.raises(ValueError, match="calibration_method: unknown 'mse'"):
        CALIBRATORS.create("mse")


def _brute_kl_bins(hist, levels, stride=1):
    """Plain-loop float64 KL threshold search written from the published algorithm."""
    n = len(hist)
    best, best_kl = n, float("inf")
    cands = list(range(levels, n + 1, stride))
    if cands[-1] != n:
        cands.append(n)
    for i in cands:
        p = [float(v) for v in hist[:i]]
        p[-1] += float(sum(hist[i:]))
        width = i // levels
        q = [0.0] * i
        for lvl in range(levels):
            lo = lvl * width
            hi = i if lvl == levels - 1 else lo + width
            total = float(sum(hist[lo:hi]))
            nz = [k for k in range(lo, hi) if p[k] != 0]
            for k in nz:
                q[k] = total / len(nz)

        def smooth(x):
            zeros = [v == 0 for v in x]
            nzc = len(x) - sum(zeros)
            if nzc == 0:
                return None
            take = 1e-4 * sum(zeros) / nzc
            return [1e-4 if z else v - take for v, z in zip(x, zeros, strict=True)]

        ps, qs = smooth(p), smooth(q)
        if ps is None or qs is None:
            continue
        sp, sq = sum(ps), sum(qs)
        kl = sum((a / sp) * math.log((a / sp) / (b / sq)) for a, b in zip(ps, qs, strict=True))
        if kl < best_kl:
            best, best_kl = i, kl
    return best


@pytest.mark.parametrize(
    ("seed", "levels", "stride"), [(0, 8, 1), (1, 8, 3), (2, 16, 1), (3, 5, 2)]
)
def test_kl_search_matches_brute_force(seed, levels, stride):
    rng = np.random.default_rng(seed)
    x = np.abs(np.concatenate([rng.standard_normal(3000), rng.standard_normal(8) * 6]))
    hist, _ = np.histogram(x, 96, (0, x.max()))
    hist[40:45] = 0  # empty bins inside the range exercise the smoothing
    got = kl_threshold_bins(hist, levels, stride)
    assert got == _brute_kl_bins(list(hist), levels, stride)
    ref_kl = clipped_kl(hist.astype(np.float64), got, levels)
    assert ref_kl <= clipped_kl(hist.astype(np.float64), hist.size, levels) + 1e-12


def test_kl_search_does_not_pick_the_smallest_threshold():
    # The former bug: Q built from the clipped P made KL 0 at i == levels, amax = 1/16 absmax.
    rng = np.random.default_rng(4)
    x = np.abs(rng.standard_normal(200000))
    hist, _ = np.histogram(x, 2048, (0, x.max()))
    bins = kl_threshold_bins(hist, 128)
    threshold = bins * x.max() / 2048
    # A unit Gaussian quantized to 128 levels: the KL optimum clips in the far tail
    # (about 3-4.5 sigma), never inside the bulk.
    assert 2.5 < threshold < x.max()


def test_entropy_uses_256_levels_for_nonnegative_uint8_tensors():
    rng = np.random.default_rng(5)
    relu = np.maximum(rng.standard_normal(100000), 0).astype(np.float32)
    signed = rng.standard_normal(100000).astype(np.float32)
    cal = CALIBRATORS.create("entropy", unsigned_levels=256)
    for p in range(cal.passes):
        cal.observe("relu", relu, p)
        cal.observe("signed", signed, p)
    assert cal.levels("relu") == 256
    assert cal.levels("signed") == 128
    amax = cal.amax()
    for name, x, levels in (("relu", relu, 256), ("signed", signed, 128)):
        hist, _ = np.histogram(np.abs(x), 2048, (0, np.abs(x).max()))
        want = kl_threshold_bins(hist, levels) * np.abs(x).max() / 2048
        assert amax[name] == pytest.approx(want, rel=1e-6)


def test_entropy_rejects_bad_levels():
    with pytest.raises(ValueError, match="num_levels: expected a positive int"):
        CALIBRATORS.create("entropy", num_levels=0)
