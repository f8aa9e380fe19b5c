"""Quantized activations of layers exported in float: kept in the loader's sidecar file.

A layer whose weight quantizer is off is exported in float and listed in
``exclude_modules`` (engines run it unquantized, as ModelOpt writes such layers). Its input
quantizer may still be on, e.g. after
``mtq.disable_quantizer(model, "*experts.3.down_proj.weight_quantizer")`` (or ModelOpt's
``"*down_proj_weight_quantizers.3"``), and the fake-quantized model then quantizes that
layer's input (an output quantizer left on likewise quantizes its output). No checkpoint
format has a float weight with quantized activations, so the engine-facing tensors stay those
of a float layer; the calibrated state of its input and output quantizers (``amax``,
``pre_quant_scale``) is written to ``modeloptim_quantizers.json`` instead (as exact
hexadecimal floats), and :func:`~.loader.load_hf_checkpoint` restores it, so the reloaded
model computes exactly what the exported one did (a checkpoint written before this state
existed, which lost such a scale, is a clear load error instead of a failing forward).

Smoothing factors need more care, as engines read only the float weight of such a layer
(:func:`prepare_float_layers`, run by the export before anything is packed): an AWQ
``pre_quant_scale`` on an input that is not quantized (scale-only, weight-only AWQ) is folded
into the float weight in place (``W[:, j] *= s[j]``, the layer's function up to float
rounding), so the checkpoint holds a plain float layer; a smoothed input that *is* quantized
(SmoothQuant, W4A8 AWQ) has no such form, and the export refuses it before anything changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modeloptim.torch.export.layers import layer_export
from modeloptim.torch.export.packers import UnsupportedFormatError, quantizes
from modeloptim.torch.export.scales import activation_rule
from modeloptim.torch.quantization.nn import SequentialQuantizer, TensorQuantizer
from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule

__all__ = [
    "float_layer_activation_state",
    "is_float_layer",
    "missing_float_layer_scales",
    "prepare_float_layers",
    "restore_float_layer_activations",
]

_FIELDS = ("amax", "pre_quant_scale")
_ACTIVATIONS = ("input_quantizer", "output_quantizer")


def _encode(t: torch.Tensor) -> dict[str, Any]:
    """A tensor as exact plain data: dtype, shape and ``float.hex`` of every element."""
    flat = t.detach().cpu().reshape(-1).double().tolist()  # float16/32/bf16 -> double: exact
    return {
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
        "hex": [float(v).hex() for v in flat],
    }


def _decode(d: dict[str, Any], name: str) -> torch.Tensor:
    try:
        dtype = getattr(torch, d["dtype"])
        values = [float.fromhex(v) for v in d["hex"]]
        return torch.tensor(values, dtype=torch.float64).to(dtype).reshape(d["shape"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise ValueError(f"path: bad stored state of quantizer {name!r}: {err}") from None


def is_float_layer(name: str, module: nn.Module) -> bool:
    """Whether ``module`` is a quantized-module layer whose weight is exported in float."""
    if not isinstance(module, QuantModule):
        return False
    wq = module._modules.get("weight_quantizer")
    return isinstance(wq, TensorQuantizer | SequentialQuantizer) and not layer_export(name, module)


def _float_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if is_float_layer(n, m)]


def _smoothed_inputs(model: nn.Module) -> list[tuple[str, nn.Module, TensorQuantizer]]:
    """Float-exported layers whose enabled input quantizer has a ``pre_quant_scale``."""
    out = []
    for name, module in _float_layers(model):
        iq = module._modules.get("input_quantizer")
        if isinstance(iq, TensorQuantizer) and iq.is_enabled and iq.pre_quant_scale is not None:
            out.append((name, module, iq))
    return out


@torch.no_grad()
def prepare_float_layers(model: nn.Module) -> list[str]:
    """Fold scale-only smoothing of float-exported layers into their weights, in place.

    All layers are checked before any is changed.

    Returns:
        Names of the layers whose ``pre_quant_scale`` was folded into the weight.

    Raises:
        UnsupportedFormatError: a float-exported layer quantizes a smoothed input (names
            the quantizers and what to change).
    """
    todo = _smoothed_inputs(model)
    bad = [f"{n}.input_quantizer" for n, _, iq in todo if quantizes(iq)]
    if bad:
        raise UnsupportedFormatError(
            f"model: the weight quantizers of {len(bad)} layers are off but their input "
            f"quantizers quantize a smoothed input ({', '.join(repr(b) for b in bad[:4])}"
            f"{', ...' if len(bad) > 4 else ''}): the smoothing (pre_quant_scale) is folded "
            "into their weights and a float layer in the checkpoint cannot carry it. Disable "
            "those weight quantizers before mtq.quantize (calibration then leaves the layers "
            "unsmoothed), or keep them enabled. Nothing was written"
        )
    for _, module, iq in todo:
        s = iq.pre_quant_scale
        assert s is not None
        weight: Any = module.weight  # [out, in]; a view for 3-D MoE experts
        weight.mul_(s.reshape(-1).to(weight.dtype))  # x * s @ W^T == x @ (W * s)^T
        iq.pre_quant_scale = None
    return [n for n, _, _ in todo]


def float_layer_activation_state(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Calibrated state of the enabled activation quantizers of layers exported in float.

    Returns:
        ``{"<layer>.input_quantizer": {"amax": ..., "pre_quant_scale": ...}, ...}`` (each
        field present when set; tensors as ``{"dtype", "shape", "hex"}``) for the enabled
        input and output quantizers holding state of every layer whose weight is not
        quantized.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, module in _float_layers(model):
        for attr in _ACTIVATIONS:
            q = module._modules.get(attr)
            if not isinstance(q, TensorQuantizer) or not q.is_enabled:
                continue
            state = {f: _encode(v) for f in _FIELDS if (v := getattr(q, f)) is not None}
            if state:
                out[f"{name}.{attr}"] = state
    return out


@torch.no_grad()
def restore_float_layer_activations(model: nn.Module, state: dict[str, dict[str, Any]]) -> None:
    """Inverse of :func:`float_layer_activation_state` on a model with restored quantizers.

    Raises:
        ValueError: a named quantizer is missing from ``model`` or its stored state is
            malformed.
    """
    for name, fields in state.items():
        try:
            q = model.get_submodule(name)
        except AttributeError:
            q = None
        if not isinstance(q, TensorQuantizer):
            raise ValueError(f"path: stored quantizer {name!r} is not in the model")
        for f in _FIELDS:
            if f in fields:
                setattr(q, f, _decode(fields[f], name))


def missing_float_layer_scales(model: nn.Module) -> list[str]:
    """Enabled static activation quantizers of float layers that have no amax.

    After :func:`restore_float_layer_activations` this is empty for checkpoints written with
    the sidecar state; checkpoints exported before it existed list the quantizers whose
    scales they lost (the model would fail at its first forward).
    """
    out: list[str] = []
    for name, module in _float_layers(model):
        for attr in _ACTIVATIONS:
            q = module._modules.get(attr)
            static = isinstance(q, TensorQuantizer) and activation_rule(q) is not None
            if static and quantizes(q) and getattr(q, "amax", None) is None:
                out.append(f"{name}.{attr}")
    return out
