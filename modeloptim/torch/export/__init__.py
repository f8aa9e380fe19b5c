"""Export quantized models as deployable checkpoints and load them back.

- :func:`export_hf_checkpoint`: HF causal LM -> safetensors with packed weights + scales,
  ``config.json`` with ``quantization_config``, ``hf_quant_config.json`` (ModelOpt layout) or
  the compressed-tensors layout.
- :func:`load_hf_checkpoint`: rebuild a runnable (compressed) model from our export, bit-exact
  from the scales engines read.
- :func:`snap_model_scales`: move the few static scales that no float32 engine scale can
  express to the nearest one that can (export does it; call it after calibration to evaluate
  exactly what will be exported).
"""

from .hf import ExportLayout, ExportReport, export_hf_checkpoint
from .loader import load_hf_checkpoint
from .scales import snap_model_scales

__all__ = [
    "ExportLayout",
    "ExportReport",
    "export_hf_checkpoint",
    "load_hf_checkpoint",
    "snap_model_scales",
]
