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

from modeloptim.onnx.quantization.kl_search import kl_threshold_bins


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
            out[name] = self._threshold(hist.astype(np.float64), self.absmax[name], name)
        return out

    def _threshold(self, hist: np.ndarray, top: float, name: str) -> float:
        raise NotImplementedError


@CALIBRATORS.register("percentile")
class PercentileCalibrator(_HistogramCalibrator):
    """amax = the ``percentile`` (default 99.99) of ``|x|``."""

    def __init__(self, percentile: float = 99.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile: expected a value in (0, 100], got {percentile}")
        self.percentile = percentile

    def _threshold(self, hist: np.ndarray, top: float, name: str) -> float:
        cdf = np.cumsum(hist) / max(hist.sum(), 1.0)
        idx = int(np.searchsorted(cdf, self.percentile / 100.0))
        return float(min(idx + 1, len(hist)) * top / len(hist))


@CALIBRATORS.register("entropy")
class EntropyCalibrator(_HistogramCalibrator):
    """amax minimizing the KL divergence between the clipped and the quantized histogram.

    TensorRT's entropy calibration (see :mod:`~modeloptim.onnx.quantization.kl_search`):
    ``num_bins`` (2048) bins of ``|x|``, candidate thresholds from ``num_levels`` bins up in
    steps of ``stride``. ``num_levels`` is 128 for symmetric int8 (magnitudes 0..127); a
    tensor that is never negative uses ``unsigned_levels`` when given (256 for uint8
    activations, whose range then starts at 0 and spends all 256 codes on the magnitude).
    """

    def __init__(
        self,
        num_levels: int = 128,
        stride: int = 1,
        unsigned_levels: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for arg, value in (("num_levels", num_levels), ("stride", stride)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg}: expected a positive int, got {value!r}")
        self.num_levels = num_levels
        self.stride = stride
        self.unsigned_levels = unsigned_levels

    def levels(self, name: str) -> int:
        """Quantization levels of the magnitude of tensor ``name``."""
        if self.unsigned_levels and self.low.get(name, -1.0) >= 0.0:
            return self.unsigned_levels
        return self.num_levels

    def _threshold(self, hist: np.ndarray, top: float, name: str) -> float:
        bins = kl_threshold_bins(hist, self.levels(name), self.stride)
        return float(bins * top / len(hist))
