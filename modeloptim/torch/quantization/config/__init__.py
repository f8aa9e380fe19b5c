"""Quantization configs (validated pydantic models)."""

from .quantizer import QuantizerAttributeConfig

__all__ = ["QuantizerAttributeConfig"]
