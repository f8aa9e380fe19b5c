"""The compressed-tensors layout (``compressed-tensors`` package, vLLM, llm-compressor).

``config.json`` carries ``quantization_config = {"quant_method": "compressed-tensors",
"format": ..., "quantization_status": "compressed", "config_groups": {...}, "ignore": [...],
"kv_cache_scheme": ...}``; each config group holds a scheme (``weights`` /
``input_activations`` quantization args) and its ``targets`` (``["Linear"]`` when all
quantized layers share one scheme, else their names). Per layer:

===================  ==============================================================
format               tensors
===================  ==============================================================
float-quantized      ``weight`` float8_e4m3fn, ``weight_scale`` float32 ``[1]`` (tensor)
                     or ``[out, 1]`` (channel), ``input_scale`` ``[1]``
int-quantized        ``weight`` int8, ``weight_scale`` ``[out, 1]``, ``input_scale``
pack-quantized       ``weight_packed`` int32 ``[out, ceil(in/8)]`` (4-bit values + 8, element
                     ``i`` at bits ``4i`` of a little-endian word), ``weight_scale``
                     ``[out, in/g]``, ``weight_shape`` int64 ``[2]``
nvfp4-pack-quantized ``weight_packed`` uint8 ``[out, in/2]``, ``weight_scale`` float8_e4m3fn
                     ``[out, in/16]``, ``weight_global_scale`` float32 ``[1]`` (``1 /
                     scale_2``), ``input_global_scale`` ``[1]`` (``6 * 448 / amax``)
===================  ==============================================================

compressed-tensors divides by ``scale / global_scale`` where we multiply by the reciprocal,
so its values can differ from ours by float32 roundings (see the external-reader test).
There is no ``pre_quant_scale`` in this layout: smoothed layers (AWQ/SmoothQuant) are refused
with a clear error; use ``layout="modelopt"`` for them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from modeloptim.torch.export.layers import LayerExport, format_kind
from modeloptim.torch.export.packers import UnsupportedFormatError
from modeloptim.torch.quantization.nn import TensorQuantizer
from modeloptim.torch.quantization.qtensor import QTensor, pack_nibbles
from modeloptim.torch.quantization.qtensor.base import true_div

__all__ = ["CT_SCHEMES", "ct_kv_tensors", "ct_layer_tensors", "ct_quant_config", "layer_scheme"]

_FP8_MAX = 448.0


def _args(num_bits: int, typ: str, strategy: str, **kw: Any) -> dict[str, Any]:
    out = {"num_bits": num_bits, "type": typ, "symmetric": True, "strategy": strategy}
    out.update({"dynamic": False, "group_size": None, "block_structure": None, "actorder": None})
    out.update(kw)
    return out


def _scheme_fp8(spec: LayerExport) -> tuple[str, dict[str, Any]]:
    strategy = "tensor" if spec.weight_kind == "fp8" else "channel"
    scheme: dict[str, Any] = {"weights": _args(8, "float", strategy)}
    if spec.input_kind == "fp8":
        scheme["input_activations"] = _args(8, "float", "tensor")
    elif spec.input_kind == "fp8_dyn":
        scheme["input_activations"] = _args(8, "float", "token", dynamic=True)
    return "float-quantized", scheme


def _scheme_int8(spec: LayerExport) -> tuple[str, dict[str, Any]]:
    strategy = "channel" if spec.weight_kind == "int8_pc" else "tensor"
    scheme: dict[str, Any] = {"weights": _args(8, "int", strategy)}
    if spec.input_kind == "int8":
        scheme["input_activations"] = _args(8, "int", "tensor")
    return "int-quantized", scheme


def _scheme_int4(spec: LayerExport) -> tuple[str, dict[str, Any]]:
    return "pack-quantized", {"weights": _args(4, "int", "group", group_size=spec.group_size)}


def _scheme_nvfp4(spec: LayerExport) -> tuple[str, dict[str, Any]]:
    w = _args(4, "float", "tensor_group", group_size=16, scale_dtype="torch.float8_e4m3fn")
    scheme: dict[str, Any] = {"weights": w}
    if spec.input_kind == "nvfp4":
        scheme["input_activations"] = {**w, "dynamic": "local"}
    return "nvfp4-pack-quantized", scheme


#: (weight kind, input kind) -> scheme builder
CT_SCHEMES = {
    ("fp8", "fp8"): _scheme_fp8,
    ("fp8", None): _scheme_fp8,
    ("fp8_pc", None): _scheme_fp8,
    ("fp8_pc", "fp8_dyn"): _scheme_fp8,
    ("int8_pc", "int8"): _scheme_int8,
    ("int8_pc", None): _scheme_int8,
    ("int4_block", None): _scheme_int4,
    ("nvfp4", "nvfp4"): _scheme_nvfp4,
    ("nvfp4", None): _scheme_nvfp4,
}


def layer_scheme(spec: LayerExport) -> tuple[str, dict[str, Any]]:
    """``(format, scheme)`` of one layer.

    Raises:
        UnsupportedFormatError: the layout has no form for the layer, or it is smoothed.
    """
    if spec.pre_quant_scale is not None:
        raise UnsupportedFormatError(
            f"layer {spec.name!r}: compressed-tensors has no pre_quant_scale (AWQ/SmoothQuant "
            "smoothing); export with layout='modelopt'"
        )
    builder = CT_SCHEMES.get((spec.weight_kind, spec.input_kind))
    if builder is None:
        known = ", ".join(f"{w}+{i or 'none'}" for w, i in CT_SCHEMES)
        raise UnsupportedFormatError(
            f"layer {spec.name!r}: weight {spec.weight_kind} with input "
            f"{spec.input_kind or 'unquantized'} has no compressed-tensors form (supported: "
            f"{known})"
        )
    return builder(spec)


def _pack_int32_4bit(codes: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7] ``[out, in]`` -> int32 ``[out, ceil(in/8)]`` (offset 8)."""
    u = (codes.to(torch.int16) + 8).to(torch.uint8)
    u = F.pad(u, (0, (-u.shape[-1]) % 8))
    return pack_nibbles(u).contiguous().view(torch.int32)


def _input_tensors(q: TensorQuantizer | None) -> dict[str, torch.Tensor]:
    if q is None or q.amax is None:
        return {}
    kind = format_kind(q.format)
    amax = q.amax.float().reshape(1)
    if kind == "nvfp4":
        return {"input_global_scale": true_div(6.0 * _FP8_MAX, amax)}
    if kind in ("fp8", "int8"):
        return {"input_scale": amax / q.maxbound}
    return {}


def ct_layer_tensors(spec: LayerExport, qt: QTensor) -> dict[str, torch.Tensor]:
    """Checkpoint tensors of one layer (names relative to it)."""
    name = qt.format_name
    out: dict[str, torch.Tensor]
    if name in ("fp8_e4m3", "int8"):
        ws = true_div(1.0, qt.scales["scale"]).float()
        ws = ws.reshape(1) if ws.numel() == 1 else ws.reshape(-1, 1)
        out = {"weight": qt.data, "weight_scale": ws}
    elif name == "int4_block":
        codes = qt.codes()  # type: ignore[attr-defined]
        out = {
            "weight_packed": _pack_int32_4bit(codes),
            "weight_scale": true_div(1.0, qt.scales["scale"]).float().contiguous(),
            "weight_shape": torch.tensor(list(qt.shape), dtype=torch.int64),
        }
    elif name == "nvfp4":
        out = {
            "weight_packed": qt.data,
            "weight_scale": qt.scales["block_scale"].contiguous(),
            "weight_global_scale": true_div(1.0, qt.scales["scale_2"].float()).reshape(1),
        }
    else:
        raise UnsupportedFormatError(f"layer {spec.name!r}: {name} has no compressed-tensors form")
    out.update(_input_tensors(spec.input_quantizer))
    return out


def ct_kv_tensors(name: str, k: TensorQuantizer, v: TensorQuantizer) -> dict[str, torch.Tensor]:
    """``<attn>.k_scale`` / ``<attn>.v_scale`` (FP8 per-tensor KV cache)."""
    out = {}
    for q, key in ((k, "k_scale"), (v, "v_scale")):
        if format_kind(q.format) != "fp8" or q.amax is None:
            raise UnsupportedFormatError(
                f"layer {name!r}: compressed-tensors KV cache needs static FP8 per-tensor {key}"
            )
        out[f"{name}.{key}"] = (q.amax.float() / _FP8_MAX).reshape(1)
    return out


def ct_quant_config(
    layers: list[LayerExport], excluded: list[str], kv: bool, version: str
) -> dict[str, Any]:
    """``config.json`` ``quantization_config`` for ``layers``."""
    groups: dict[str, dict[str, Any]] = {}
    formats: dict[str, str] = {}
    keyed: dict[str, list[str]] = {}
    for spec in layers:
        fmt, scheme = layer_scheme(spec)
        key = repr(sorted(scheme.items())) + fmt
        if key not in keyed:
            keyed[key] = []
            groups[key] = {**scheme, "output_activations": None, "format": fmt}
            formats[key] = fmt
        keyed[key].append(spec.name)
    config_groups = {}
    for i, (key, names) in enumerate(keyed.items()):
        targets = ["Linear"] if len(keyed) == 1 else names
        config_groups[f"group_{i}"] = {"targets": targets, **groups[key]}
    fmts = sorted(set(formats.values()))
    qc: dict[str, Any] = {
        "quant_method": "compressed-tensors",
        "format": fmts[0] if len(fmts) == 1 else "mixed-precision",
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": list(excluded),
        "kv_cache_scheme": _args(8, "float", "tensor") if kv else None,
        "global_compression_ratio": None,
        "version": version,
        "producer": "modeloptim",
    }
    return qc
