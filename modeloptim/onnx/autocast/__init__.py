"""FP16/BF16 mixed-precision conversion of ONNX models with measured fp32 fallbacks."""

from modeloptim.onnx.autocast.convert import AutocastReport
from modeloptim.onnx.autocast.mixed_precision import convert_model, convert_to_mixed_precision

__all__ = ["AutocastReport", "convert_model", "convert_to_mixed_precision"]
