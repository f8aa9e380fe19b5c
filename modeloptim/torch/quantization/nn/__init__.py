"""Quantization ``nn`` modules (``TensorQuantizer``, ``SequentialQuantizer``, ...)."""

from .modules import SequentialQuantizer, TensorQuantizer

__all__ = ["SequentialQuantizer", "TensorQuantizer"]
