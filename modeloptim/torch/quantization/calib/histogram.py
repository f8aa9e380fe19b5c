"""``HistogramCalibrator``: a histogram of ``|x|`` accumulated over batches.

The histogram has a fixed number of bins over ``[0, range]``. When a batch exceeds the
range, the range grows to the new maximum and the counts collected so far are re-binned by
linear interpolation of their cumulative distribution (so no batch is ever kept). Counts
are float64. :meth:`HistogramCalibrator.compute_amax` picks amax with one of the methods in
:data:`HISTOGRAM_METHODS` (``percentile``, ``entropy``, ``mse``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .base import Calibrator
from .entropy import entropy_amax
from .mse import mse_amax
from .percentile import percentile_amax

__all__ = ["HISTOGRAM_METHODS", "HistogramCalibrator"]

_MIN_RANGE = 2.0**-24


def _percentile(cal: HistogramCalibrator, percentile: float = 99.99) -> float:
    return percentile_amax(cal.hist, cal.edges, percentile)


def _entropy(cal: HistogramCalibrator, start_bin: int = 128, stride: int = 1) -> float:
    nb = cal._num_bits
    if not isinstance(nb, int):
        raise ValueError(f"num_bits: method='entropy' needs integer num_bits, got {nb!r}")
    return entropy_amax(cal.hist, cal.edges, nb, cal._unsigned, start_bin, stride)


def _mse(cal: HistogramCalibrator, start_bin: int = 128, stride: int = 1) -> float:
    return mse_amax(
        cal.hist, cal.edges, cal._num_bits, cal._unsigned, cal._narrow_range, start_bin, stride
    )


#: method name -> function(calibrator, **options) -> amax
HISTOGRAM_METHODS: dict[str, Callable[..., float]] = {
    "percentile": _percentile,
    "entropy": _entropy,
    "mse": _mse,
}


class HistogramCalibrator(Calibrator):
    """Per-tensor histogram calibrator.

    Args:
        num_bits: bits of the quantizer (int, or ``(E, M)`` for FP8 with ``mse``).
        axis: must be ``None`` (histograms are per tensor).
        unsigned: unsigned quantizer.
        num_bins: number of histogram bins.
        skip_zeros: ignore exact zeros (e.g. after ReLU or padding).
        narrow_range: integer narrow range (used by ``mse``).
    """

    def __init__(
        self,
        num_bits: int | tuple[int, int] = 8,
        axis: int | tuple[int, ...] | None = None,
        unsigned: bool = False,
        num_bins: int = 2048,
        skip_zeros: bool = False,
        *,
        narrow_range: bool = True,
    ) -> None:
        if axis is not None:
            raise ValueError(f"axis: HistogramCalibrator is per-tensor only, got axis={axis!r}")
        if not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"num_bins: expected an int >= 2, got {num_bins!r}")
        super().__init__(num_bits, axis, unsigned)
        self._num_bins = num_bins
        self._skip_zeros = skip_zeros
        self._narrow_range = narrow_range
        self.reset()

    def reset(self) -> None:  # noqa: D102
        self._hist: np.ndarray | None = None
        self._range = 0.0
        self._device = torch.device("cpu")

    @property
    def hist(self) -> np.ndarray:
        """Counts per bin ``[num_bins]`` (float64)."""
        if self._hist is None:
            raise RuntimeError("HistogramCalibrator: no data collected yet")
        return self._hist

    @property
    def edges(self) -> np.ndarray:
        """Bin edges ``[num_bins + 1]`` over ``[0, range]``."""
        return np.linspace(0.0, self._range, self._num_bins + 1)

    def collect(self, x: torch.Tensor) -> None:
        """Add ``|x|`` of one batch to the histogram (NaN/Inf raise ``ValueError``)."""
        x = self._check(x)
        a = x.abs().float().reshape(-1)
        if a.numel() == 0:
            return
        top = a.max()
        self._check_reduced(top, x)  # before any state changes
        self._device = a.device  # amax is returned where the data lives
        if self._skip_zeros:
            a = a[a != 0]
            if a.numel() == 0:
                return
        xmax = max(float(top), _MIN_RANGE)
        if self._hist is None:
            self._hist = np.zeros(self._num_bins)
            self._range = xmax
        elif xmax > self._range:
            self._rebin(xmax)
        # histc counts in the input dtype (float32): chunks keep every count exact.
        for chunk in a.split(1 << 24):
            counts = torch.histc(chunk, bins=self._num_bins, min=0.0, max=self._range)
            self._hist += counts.double().cpu().numpy()

    def _rebin(self, new_range: float) -> None:
        assert self._hist is not None
        old_edges = self.edges
        cdf = np.concatenate([[0.0], np.cumsum(self._hist)])
        new_edges = np.linspace(0.0, new_range, self._num_bins + 1)
        self._hist = np.diff(np.interp(new_edges, old_edges, cdf))
        self._range = new_range

    def compute_amax(  # type: ignore[override]
        self, method: str = "percentile", **kwargs: Any
    ) -> torch.Tensor | None:
        """The amax chosen by ``method``; ``None`` before any data was collected.

        Args:
            method: ``"percentile"``, ``"entropy"`` or ``"mse"``.
            **kwargs: method options: ``percentile`` (default 99.99) for percentile;
                ``start_bin`` (default 128) and ``stride`` (default 1) for entropy and mse.
        """
        fn = HISTOGRAM_METHODS.get(method)
        if fn is None:
            raise ValueError(f"method: expected one of {sorted(HISTOGRAM_METHODS)}, got {method!r}")
        if self._hist is None:
            return None
        return torch.tensor(fn(self, **kwargs), dtype=torch.float32, device=self._device)
