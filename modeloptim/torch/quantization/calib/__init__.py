"""Calibrators: statistics collected over many batches -> amax."""

from .base import Calibrator
from .histogram import HISTOGRAM_METHODS, HistogramCalibrator
from .max_calib import MaxCalibrator

__all__ = ["HISTOGRAM_METHODS", "Calibrator", "HistogramCalibrator", "MaxCalibrator"]
