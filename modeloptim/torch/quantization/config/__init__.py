"""Quantization configs (validated pydantic models)."""

from .quantizer import QuantizerAttributeConfig

__all__ = ["QuantizerAttributeConfig"]

# --- quantize configs and presets (qapi) ---
from .presets import *  # noqa: F403  (every preset name, ModelOpt style)
from .presets import PRESETS, get_preset
from .quantize import QuantizeConfig, QuantizerCfgEntry

__all__ += ["PRESETS", "QuantizeConfig", "QuantizerCfgEntry", "get_preset", *PRESETS]
