"""ONNX post-training quantization (INT8, FP8, INT4 weight-only).

Example:
    >>> from modeloptim.onnx.quantization import quantize
    >>> quantize("model.onnx", quantize_mode="int8", calibration_data="calib.npz")  # doctest: +SKIP
"""

from modeloptim.onnx.quantization.quantize import QuantizeResult, quantize

__all__ = ["QuantizeResult", "quantize"]
