"""modeloptim: make trained PyTorch and ONNX models cheaper to serve.

The top-level import stays light (torch only); optional integrations (transformers, onnx,
triton) are imported lazily by the parts that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
