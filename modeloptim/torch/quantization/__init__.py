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

# --- quantize API, configs, presets, module registry (qapi) ---
from .algorithms import calibration_algorithms
from .config import PRESETS, QuantizeConfig, QuantizerCfgEntry, get_preset
from .config.presets import *  # noqa: F403  (INT8_DEFAULT_CFG, FP8_DEFAULT_CFG, ...)
from .conversion import (
    replace_quant_module,
    set_quantizer_attribute,
    set_quantizer_by_cfg,
)
from .model_quant import (
    calibrate,
    disable_quantizer,
    enable_quantizer,
    fold_weight,
    postprocess_amax,
    print_quant_summary,
    quantize,
)
from .nn import QuantModuleRegistry, cache_quantized_weights

__all__ += [
    "PRESETS",
    "QuantModuleRegistry",
    "QuantizeConfig",
    "QuantizerCfgEntry",
    "cache_quantized_weights",
    "calibrate",
    "calibration_algorithms",
    "disable_quantizer",
    "enable_quantizer",
    "fold_weight",
    "get_preset",
    "postprocess_amax",
    "print_quant_summary",
    "quantize",
    "replace_quant_module",
    "set_quantizer_attribute",
    "set_quantizer_by_cfg",
    *PRESETS,
]

# --- calibration algorithms and per-layer format search (algos) ---
from .auto_quantize import auto_quantize  # noqa: E402

__all__ += ["auto_quantize"]

# export (real quantized weights); ONNX export lives in .export_onnx (imports onnx lazily)
from .compress import compress  # noqa: E402  (after the qapi block: needs its modules)

__all__ += ["compress"]
