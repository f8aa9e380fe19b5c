"""Quantizer modules."""

from .sequential_quantizer import SequentialQuantizer
from .tensor_quantizer import TensorQuantizer

__all__ = ["SequentialQuantizer", "TensorQuantizer"]
