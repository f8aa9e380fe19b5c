"""Quantization (import as ``mtq``): formats, TensorQuantizer, configs, calibrators."""

from .calib import Calibrator, HistogramCalibrator, MaxCalibrator
from .config import QuantizerAttributeConfig
from .formats import QuantFormat, QuantizedCodes, resolve_format
from .nn import SequentialQuantizer, TensorQuantizer

__all__ = [
    "Calibrator",
    "HistogramCalibrator",
    "MaxCalibrator",
    "QuantFormat",
    "QuantizedCodes",
    "QuantizerAttributeConfig",
    "SequentialQuantizer",
    "TensorQuantizer",
    "resolve_format",
]

# export (real quantized weights); ONNX export lives in .export_onnx (imports onnx lazily)
from .compress import compress

__all__ += ["compress"]
