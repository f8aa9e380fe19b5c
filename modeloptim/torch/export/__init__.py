"""Export quantized models as deployable checkpoints and load them back.

- :func:`export_hf_checkpoint`: HF causal LM -> safetensors with packed weights + scales,
  ``config.json`` with ``quantization_config``, ``hf_quant_config.json`` (ModelOpt layout) or
  the compressed-tensors layout.
- :func:`load_hf_checkpoint`: rebuild a runnable (compressed) model from our export.
"""

from .hf import ExportLayout, ExportReport, export_hf_checkpoint
from .loader import load_hf_checkpoint

__all__ = ["ExportLayout", "ExportReport", "export_hf_checkpoint", "load_hf_checkpoint"]
