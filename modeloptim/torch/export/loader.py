"""Rebuild a runnable model from a checkpoint written by :func:`export_hf_checkpoint`.

The model is built from ``config.json`` (random init, then every tensor is overwritten), its
layers get their quantizers back from ``modeloptim_quantizers.json``, and each quantized
layer receives its packed weight as a :class:`~modeloptim.torch.quantization.compress.
CompressedWeight` decoded from the checkpoint tensors (the weight quantizer stage it encodes
is disabled). Activation, KV and W4A8 second-stage amaxes come from ``input_scale`` /
``k_scale`` / ``v_scale`` / ``weight_scale_2`` through the rules of :mod:`.scales` (an amax
whose multiplier is ``fl(1 / scale)``), smoothing factors from ``pre_quant_scale``. Only the
tensors engines read are used: the reload is bit-exact for every format (the export snaps the
few scales that a float32 engine scale cannot express; see :mod:`.scales`).

Only the ModelOpt layout is read here; compressed-tensors checkpoints are read by the
``compressed-tensors`` package (e.g. through ``transformers``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeloptim.torch.export.float_layers import (
    missing_float_layer_scales,
    restore_float_layer_activations,
)
from modeloptim.torch.export.hf import QUANTIZERS_FILE
from modeloptim.torch.export.modelopt_layout import decode_weight
from modeloptim.torch.export.moe import load_expert_layers
from modeloptim.torch.export.packers import leaf_quantizers
from modeloptim.torch.export.scales import activation_rule
from modeloptim.torch.quantization.compress import compress_layer
from modeloptim.torch.quantization.nn import TensorQuantizer

__all__ = ["load_hf_checkpoint", "load_safetensors_folder"]


def load_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``folder``'s ``*.safetensors`` files."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"path: no *.safetensors files in {str(folder)!r}")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def _intkeys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            (int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k): _intkeys(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_intkeys(v) for v in obj]
    return obj


def _restore_quantizers(model: nn.Module, desc: dict[str, Any]) -> None:
    from modeloptim.torch.quantization.conversion import (
        replace_quant_module,
        set_quantizer_attribute,
    )

    replace_quant_module(model)
    by_cfg: dict[str, set[str]] = {}
    for name, d in desc.items():
        by_cfg.setdefault(json.dumps(d["cfg"], sort_keys=True), set()).add(name)
    for cfg_json, names in by_cfg.items():  # one pass per distinct config, not per quantizer
        hits = set_quantizer_attribute(model, names.__contains__, _intkeys(json.loads(cfg_json)))
        if hits != len(names):
            raise ValueError(
                f"path: {len(names)} quantizers in {QUANTIZERS_FILE} but {hits} in the model"
            )
    for name, d in desc.items():
        leaves = leaf_quantizers(model.get_submodule(name))
        for i, (q, on) in enumerate(zip(leaves, d["enable"], strict=True)):
            if on:
                q.enable()
            else:
                q.disable()
            if not d.get("quant", [True] * len(leaves))[i]:  # scale-only (AWQ pre-scaler)
                q.disable_quant()
                q.disable_calib()


def _set_activation_amax(q: TensorQuantizer, scale: torch.Tensor) -> None:
    rule = activation_rule(q)
    if rule is None:
        raise ValueError(f"path: a static scale was stored for dynamic {q.format.describe()}")
    q.amax = rule.decode(scale.float().reshape(()))


def load_hf_checkpoint(
    path: str | os.PathLike[str], dtype: torch.dtype | None = None, device: str = "cpu"
) -> nn.Module:
    """Load a checkpoint exported by :func:`export_hf_checkpoint` (ModelOpt layout).

    Args:
        path: the export folder.
        dtype: dtype of the float parameters (default: ``config.json``'s ``torch_dtype``).
        device: where to put the model.

    Returns:
        A ``transformers`` model (eval mode) with packed weights and restored quantizers.

    Raises:
        FileNotFoundError: ``path`` is not an export folder.
        ValueError: the checkpoint is not ours, uses another layout, or is inconsistent.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(path)
    desc_file = folder / QUANTIZERS_FILE
    if not (folder / "config.json").is_file() or not desc_file.is_file():
        raise FileNotFoundError(
            f"path: {str(folder)!r} is not a modeloptim export (needs config.json and "
            f"{QUANTIZERS_FILE})"
        )
    desc = json.loads(desc_file.read_text())
    if desc.get("format") != "modeloptim-quantizers" or desc.get("layout") != "modelopt":
        raise ValueError(
            f"path: {QUANTIZERS_FILE} describes layout {desc.get('layout')!r}; only 'modelopt' "
            "checkpoints load here (use compressed-tensors/transformers for the other)"
        )
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    torch_dtype = dtype or getattr(
        torch, str(getattr(config, "dtype", None) or "float32").removeprefix("torch.")
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    _restore_quantizers(model, desc["quantizers"])
    restore_float_layer_activations(model, desc.get("float_layer_activations", {}))
    # checkpoints from before the sidecar state lost these scales (forward would fail)
    lost = [] if "float_layer_activations" in desc else missing_float_layer_scales(model)
    if lost:
        raise ValueError(
            f"path: the checkpoint has no scale for {lost[:3]} (quantizers enabled on layers "
            "exported in float; written by a modeloptim without float_layer_activations): "
            "export the model again"
        )
    tensors = load_safetensors_folder(folder)
    used, moe_layers, moe_filled = load_expert_layers(model, tensors, desc["layers"])
    for name, extra in desc["layers"].items():
        if name in moe_layers:
            continue
        module = model.get_submodule(name)
        local = {
            k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")
        }
        local = {k: v for k, v in local.items() if "." not in k}
        used.update(f"{name}.{k}" for k in local if k != "bias")  # bias: load_state_dict
        stages = [
            q for q in leaf_quantizers(module._modules.get("weight_quantizer")) if q.is_enabled
        ]
        if not stages:
            raise ValueError(f"path: layer {name!r} is packed but its weight quantizer is off")
        if "weight_scale_2" in local and len(stages) > 1:
            _set_activation_amax(stages[1], local["weight_scale_2"])
        qt = decode_weight(local, extra)
        compress_layer(module, qt, stages[:1])  # type: ignore[arg-type]
        iq = module._modules.get("input_quantizer")
        if isinstance(iq, TensorQuantizer):
            if "input_scale" in local:
                _set_activation_amax(iq, local["input_scale"])
            if "pre_quant_scale" in local:
                iq.pre_quant_scale = local["pre_quant_scale"]
    for key, t in tensors.items():
        for suffix, attr in (
            (".k_proj.k_scale", "k_bmm_quantizer"),
            (".v_proj.v_scale", "v_bmm_quantizer"),
        ):
            if key.endswith(suffix):
                attn_name = key.removesuffix(suffix)
                q = model.get_submodule(attn_name)._modules[attr]
                _set_activation_amax(q, t)  # type: ignore[arg-type]
                used.add(key)
    rest = {k: v for k, v in tensors.items() if k not in used}
    result = model.load_state_dict(rest, strict=False)
    missing = [
        k
        for k in result.missing_keys
        if not any(p.endswith("_quantizer") for p in k.split("."))
        and ".weight." not in k
        and k not in moe_filled
    ]
    tied = (
        {k for k in missing if k.endswith("lm_head.weight")}
        if getattr(config, "tie_word_embeddings", False)
        else set()
    )
    missing = [k for k in missing if k not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"path: checkpoint does not match the model (missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]})"
        )
    if tied:
        model.tie_weights()
    return model.to(device).eval()
