"""``quantize`` and ``calibrate`` as modes of :data:`modeloptim.torch.opt.MODES`.

``quantize`` converts layers and applies ``quant_cfg`` (calibration is run by
:func:`mtq.quantize` after the conversion). Its metadata is the *quantizer state*: for every
quantizer its attributes and switches as plain data, refreshed when the state is saved, so that
whatever changed after quantization (``disable_quantizer``, AWQ/SmoothQuant turning an input
quantizer into a scale-only one, auto_quantize's per-layer formats, a SequentialQuantizer) is
rebuilt exactly on restore. Calibrated tensors (``_amax``, ``_pre_quant_scale``) travel in the
model's ``state_dict``; the quantizers create their buffers when loading.

``calibrate`` records a re-calibration; it changes only tensors, so its replay does nothing.

``compress`` (:func:`mtq.compress`) packs the quantized weights; its metadata lists the packed
layers with their buffer shapes, so its replay installs empty packed weights that the saved
``state_dict`` then fills. It may follow ``quantize`` / ``calibrate``; nothing may follow it
(a packed weight cannot be re-calibrated).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializeAsAny, field_validator
from torch import nn

from modeloptim.torch.opt.mode import MODES
from modeloptim.torch.quantization.algorithms.registry import (
    AlgorithmConfig,
    calibration_algorithms,
)
from modeloptim.torch.quantization.compress import compress_layers, restore_layers
from modeloptim.torch.quantization.config.quantize import QuantizeConfig
from modeloptim.torch.quantization.config.quantizer import QuantizerAttributeConfig
from modeloptim.torch.quantization.conversion import (
    _set_cfg,
    named_quantizers,
    replace_quant_module,
    set_quantizer_by_cfg,
)
from modeloptim.torch.quantization.nn.modules.sequential_quantizer import SequentialQuantizer
from modeloptim.torch.quantization.nn.modules.tensor_quantizer import TensorQuantizer

__all__ = [
    "CalibrateModeConfig",
    "CompressModeConfig",
    "apply_quantizer_state",
    "quantizer_state",
]

# Modes that may follow a quantized model. Structural modes (pruning, NAS) may not: they would
# slice weights under calibrated per-channel amax and scales.
QUANTIZE_NEXT_MODES = frozenset({"calibrate", "compress"})


def _one_state(q: TensorQuantizer) -> dict[str, Any]:
    return {
        "cfg": q.quant_attribute_cfg.model_dump(mode="json"),
        "disabled": bool(q._disabled),
        "if_quant": bool(q._if_quant),
        "if_calib": bool(q._if_calib),
    }


def quantizer_state(model: nn.Module) -> dict[str, Any]:
    """Attributes and switches of every quantizer, as plain data keyed by quantizer name."""
    out: dict[str, Any] = {}
    for name, q, _parent in named_quantizers(model):
        if isinstance(q, SequentialQuantizer):
            members = [m for m in q if isinstance(m, TensorQuantizer)]
            out[name] = {"sequential": [_one_state(m) for m in members]}
        else:
            out[name] = _one_state(q)
    return out


def _set_switches(q: TensorQuantizer, state: dict[str, Any]) -> None:
    q._disabled = state["disabled"]
    q._if_quant = state["if_quant"]
    q._if_calib = state["if_calib"]


def apply_quantizer_state(model: nn.Module, state: dict[str, Any]) -> None:
    """Rebuild every quantizer from :func:`quantizer_state` output.

    Raises:
        KeyError: the model has a quantizer the state does not know, or the reverse (the
            state was saved from another architecture).
    """
    current = {name: (q, parent) for name, q, parent in named_quantizers(model)}
    if set(current) != set(state):
        extra, missing = sorted(set(current) - set(state)), sorted(set(state) - set(current))
        raise KeyError(
            f"quantizers differ from the saved state (not in state: {extra[:5]}, "
            f"not in model: {missing[:5]})"
        )
    for name, st in state.items():
        q, parent = current[name]
        if "sequential" in st:
            cfgs = [QuantizerAttributeConfig.model_validate(s["cfg"]) for s in st["sequential"]]
            seq = _set_cfg(parent, name, q, cfgs)
            assert isinstance(seq, SequentialQuantizer)
            for member, s in zip(seq, st["sequential"], strict=True):
                assert isinstance(member, TensorQuantizer)
                _set_switches(member, s)
        else:
            new = _set_cfg(parent, name, q, QuantizerAttributeConfig.model_validate(st["cfg"]))
            assert isinstance(new, TensorQuantizer)
            _set_switches(new, st)


@MODES.register(
    "quantize",
    QuantizeConfig,
    restore=lambda model, cfg, meta: _restore_quantize(model, meta),
    update_for_save=lambda model, cfg, meta: meta.update(quantizer_state=quantizer_state(model)),
    next_modes=QUANTIZE_NEXT_MODES,
)
def convert_quantize(model: nn.Module, config: BaseModel) -> tuple[nn.Module, dict[str, Any]]:
    """Convert registered layers to quantized wrappers and apply ``quant_cfg`` (no calibration)."""
    assert isinstance(config, QuantizeConfig)
    replace_quant_module(model)
    set_quantizer_by_cfg(model, config.quant_cfg)
    return model, {"quantizer_state": quantizer_state(model)}


def _restore_quantize(model: nn.Module, metadata: dict[str, Any]) -> nn.Module:
    replace_quant_module(model)
    apply_quantizer_state(model, metadata["quantizer_state"])
    return model


class CalibrateModeConfig(BaseModel):
    """Config of the ``calibrate`` mode record: the algorithm that was run."""

    model_config = ConfigDict(extra="forbid")

    algorithm: SerializeAsAny[AlgorithmConfig] | None = None

    @field_validator("algorithm", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> AlgorithmConfig:
        return v if isinstance(v, AlgorithmConfig) else calibration_algorithms.parse(v)


@MODES.register(
    "calibrate",
    CalibrateModeConfig,
    restore=lambda model, cfg, meta: model,
    next_modes=QUANTIZE_NEXT_MODES,
)
def convert_calibrate(model: nn.Module, config: BaseModel) -> tuple[nn.Module, dict[str, Any]]:
    """Record a calibration (the work itself is done by :func:`mtq.calibrate`)."""
    return model, {}


class CompressModeConfig(BaseModel):
    """Config of the ``compress`` mode (no options)."""

    model_config = ConfigDict(extra="forbid")


@MODES.register(
    "compress",
    CompressModeConfig,
    restore=lambda model, cfg, meta: restore_layers(model, meta),
    next_modes=frozenset(),
)
def convert_compress(model: nn.Module, config: BaseModel) -> tuple[nn.Module, dict[str, Any]]:
    """Replace fake-quantized weights by packed real quantized weights (``mtq.compress``)."""
    return model, compress_layers(model)
