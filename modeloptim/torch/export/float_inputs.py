"""Quantized inputs of layers exported in float: kept in the loader's sidecar file.

A layer whose weight quantizer is off is exported in float and listed in
``exclude_modules`` (engines run it unquantized, as ModelOpt writes such layers). Its input
quantizer may still be on, e.g. after
``mtq.disable_quantizer(model, "*experts.3.down_proj.weight_quantizer")`` (or ModelOpt's
``"*down_proj_weight_quantizers.3"``), and the fake-quantized model then quantizes that
layer's input. No checkpoint format has a float weight with a quantized input, so the
engine-facing tensors stay those of a float layer; the input quantizer's calibrated state
(``amax``, ``pre_quant_scale``) is written to ``modeloptim_quantizers.json`` instead (as
exact hexadecimal floats), and :func:`~.loader.load_hf_checkpoint` restores it, so the
reloaded model computes exactly what the exported one did.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modeloptim.torch.export.layers import layer_export
from modeloptim.torch.quantization.nn import SequentialQuantizer, TensorQuantizer
from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule

__all__ = ["float_layer_input_state", "restore_float_layer_inputs"]

_FIELDS = ("amax", "pre_quant_scale")


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


def _float_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Quantized-module layers with a weight quantizer whose weight is exported in float."""
    out: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not isinstance(module, QuantModule):
            continue
        wq = module._modules.get("weight_quantizer")
        if isinstance(wq, TensorQuantizer | SequentialQuantizer) and not layer_export(
            name, module
        ):
            out.append((name, module))
    return out


def float_layer_input_state(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Calibrated state of the enabled input quantizers of layers exported in float.

    Returns:
        ``{"<layer>.input_quantizer": {"amax": ..., "pre_quant_scale": ...}}`` (each field
        present when set; tensors as ``{"dtype", "shape", "hex"}``), for every layer whose
        weight is not quantized but whose input quantizer is enabled and holds state.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, module in _float_layers(model):
        iq = module._modules.get("input_quantizer")
        if not isinstance(iq, TensorQuantizer) or not iq.is_enabled:
            continue
        state = {f: _encode(v) for f in _FIELDS if (v := getattr(iq, f)) is not None}
        if state:
            out[f"{name}.input_quantizer"] = state
    return out


@torch.no_grad()
def restore_float_layer_inputs(model: nn.Module, state: dict[str, dict[str, Any]]) -> None:
    """Inverse of :func:`float_layer_input_state` on a model with restored quantizers.

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
            raise ValueError(f"path: stored input quantizer {name!r} is not in the model")
        for f in _FIELDS:
            if f in fields:
                setattr(q, f, _decode(fields[f], name))
