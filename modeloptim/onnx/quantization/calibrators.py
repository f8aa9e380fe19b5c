"""Activation range calibrators for ONNX PTQ: ``max``, ``entropy`` and ``percentile``.

A calibrator sees every captured activation tensor once per pass and returns one ``amax``
per tensor. Histogram methods need the range first, so they ask for two passes
(:attr:`Calibrator.passes`): pass 0 records the absolute maximum, pass 1 fills a histogram
of ``|x|`` over ``[0, amax]``.

New methods register with :data:`CALIBRATORS` (``@CALIBRATORS.register("name")``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np


class CalibratorRegistry:
    """Name -> calibrator class; the extension point for new calibration methods."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Calibrator]] = {}

    def register(self, name: str) -> Callable[[type[Calibrator]], type[Calibrator]]:
        """Class decorator adding a calibrator under ``name``."""

        def deco(cls: type[Calibrator]) -> type[Calibrator]:
            self._classes[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        """Registered method names."""
        return sorted(self._classes)

    def create(self, name: str, **kwargs: Any) -> Calibrator:
        """Instantiate the calibrator ``name``, or raise a ValueError naming the choices."""
        if name not in self._classes:
            raise ValueError(
                f"calibration_method: unknown {name!r}, expected one of {self.names()}"
            )
        return self._classes[name](**kwargs)


CALIBRATORS = CalibratorRegistry()


class Calibrator:
    """Base of activation calibrators: tracks the absolute maximum per tensor."""

    passes: ClassVar[int] = 1

    def __init__(self, **_: Any) -> None:
        self.absmax: dict[str, float] = {}
        self.low: dict[str, float] = {}
        self.high: dict[str, float] = {}

    def observe(self, name: str, value: np.ndarray, pass_index: int = 0) -> None:
        """Record one captured tensor (any shape) in pass ``pass_index``."""
        if pass_index == 0 and value.size:
            v = value.astype(np.float32, copy=False)
            lo, hi = float(np.min(v)), float(np.max(v))
            if np.isfinite(lo) and np.isfinite(hi):
                self.low[name] = min(self.low.get(name, lo), lo)
                self.high[name] = max(self.high.get(name, hi), hi)
                self.absmax[name] = max(-self.low[name], self.high[name], 0.0)

    def amax(self) -> dict[str, float]:
        """Return the calibrated amax per tensor."""
        return dict(self.absmax)

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Calibrated ``(lo, hi)`` per tensor: the observed min/max clipped to ``[-amax, amax]``.

        Asymmetric activation types use this; for ``max`` it is the observed min and max.
        """
        return {
            name: (max(self.low[name], -peak), min(self.high[name], peak))
            for name, peak in self.amax().items()
        }


@CALIBRATORS.register("max")
class MaxCalibrator(Calibrator):
    """amax = largest ``|x|`` seen on the calibration data."""


class _HistogramCalibrator(Calibrator):
    """Histogram of ``|x|`` with ``num_bins`` bins over ``[0, absmax]`` (second pass)."""

    passes: ClassVar[int] = 2

    def __init__(self, num_bins: int = 2048, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_bins = num_bins
        self.hists: dict[str, np.ndarray] = {}

    def observe(self, name: str, value: np.ndarray, pass_index: int = 0) -> None:
        """Pass 0: track the maximum; pass 1: accumulate the histogram."""
        if pass_index == 0:
            super().observe(name, value, 0)
            return
        top = self.absmax.get(name, 0.0)
        if top <= 0.0 or not value.size:
            return
        hist, _ = np.histogram(
            np.abs(value.astype(np.float32, copy=False)), self.num_bins, (0, top)
        )
        self.hists[name] = self.hists.get(name, 0) + hist

    def amax(self) -> dict[str, float]:
        """Return amax from each histogram (tensors without one keep their maximum)."""
        out = dict(self.absmax)
        for name, hist in self.hists.items():
            out[name] = self._threshold(hist.astype(np.float64), self.absmax[name])
        return out

    def _threshold(self, hist: np.ndarray, top: float) -> float:
        raise NotImplementedError


@CALIBRATORS.register("percentile")
class PercentileCalibrator(_HistogramCalibrator):
    """amax = the ``percentile`` (default 99.99) of ``|x|``."""

    def __init__(self, percentile: float = 99.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile: expected a value in (0, 100], got {percentile}")
        self.percentile = percentile

    def _threshold(self, hist: np.ndarray, top: float) -> float:
        cdf = np.cumsum(hist) / max(hist.sum(), 1.0)
        idx = int(np.searchsorted(cdf, self.percentile / 100.0))
        return float(min(idx + 1, len(hist)) * top / len(hist))


@CALIBRATORS.register("entropy")
class EntropyCalibrator(_HistogramCalibrator):
    """amax minimizing the KL divergence between the clipped and the quantized histogram.

    For every candidate threshold ``i`` bins (from ``num_levels`` to ``num_bins``), the
    reference distribution is the first ``i`` bins with the outliers added to the last one;
    the candidate merges that clipped histogram into ``num_levels`` quantization levels and
    expands them back uniformly over its non-empty bins. The threshold with the smallest KL wins.
    """

    def __init__(self, num_levels: int = 128, stride: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_levels = num_levels
        self.stride = stride

    def _threshold(self, hist: np.ndarray, top: float) -> float:
        nbins = len(hist)
        best_i, best_kl = nbins, np.inf
        for i in range(self.num_levels, nbins + 1, self.stride):
            ref = hist[:i].copy()
            ref[-1] += hist[i:].sum()
            if ref.sum() == 0:
                continue
            cand = _expand(_merge(ref, self.num_levels), ref != 0, i, self.num_levels)
            kl = _kl(ref, cand)
            if kl < best_kl:
                best_kl, best_i = kl, i
        return float(best_i * top / nbins)


def _merge(hist: np.ndarray, levels: int) -> np.ndarray:
    edges = np.linspace(0, len(hist), levels + 1).astype(int)
    return np.add.reduceat(hist, edges[:-1])


def _expand(merged: np.ndarray, nonzero: np.ndarray, nbins: int, levels: int) -> np.ndarray:
    edges = np.linspace(0, nbins, levels + 1).astype(int)
    out = np.zeros(nbins)
    for j in range(levels):
        lo, hi = edges[j], edges[j + 1]
        count = nonzero[lo:hi].sum()
        if count:
            out[lo:hi] = np.where(nonzero[lo:hi], merged[j] / count, 0.0)
    return out


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    qs = q.sum()
    if qs == 0:
        return np.inf
    q = q / qs
    mask = p > 0
    if np.any(q[mask] == 0):
        return np.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
