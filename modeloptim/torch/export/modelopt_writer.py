"""Tensors and quantization configs of the ModelOpt layout (see :mod:`.modelopt_layout`)."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from modeloptim import __version__
from modeloptim.torch.export.layers import LayerExport
from modeloptim.torch.export.modelopt_layout import encode_weight
from modeloptim.torch.export.scales import activation_rule
from modeloptim.torch.quantization.nn import TensorQuantizer
from modeloptim.torch.quantization.qtensor import QTensor

__all__ = [
    "KV_ALGOS",
    "activation_scale",
    "modelopt_layer_tensors",
    "modelopt_quant_configs",
    "warn_unaligned_int4",
]

#: KV-cache quantizer kind -> kv_cache_quant_algo.
KV_ALGOS = {"fp8": "FP8", "nvfp4": "NVFP4"}


def activation_scale(q: TensorQuantizer) -> torch.Tensor | None:
    """Static scale of an activation quantizer as engines use it (``≈ amax / maxbound``).

    FP8 / INT8: the float32 ``s`` with ``fl(1 / s)`` equal to the quantizer's multiplier
    (:class:`~.scales.ReciprocalRule`; exact after :func:`~.scales.snap_model_scales`).
    NVFP4 activations store their global scale ``fl(amax / (6 * 448))``. ``None`` for dynamic
    quantizers (per-token FP8, MX).
    """
    rule = activation_rule(q)
    if rule is None or q.amax is None:
        return None
    return rule.encode(q.amax)[0].reshape(())


def warn_unaligned_int4(packed: dict[str, QTensor]) -> list[str]:
    """Warn once about INT4 layers whose group size does not divide ``in_features``.

    Returns:
        Their names (the last group is zero-padded here; TensorRT-LLM refuses them).
    """
    bad = [
        name
        for name, qt in packed.items()
        if qt.format_name == "int4_block" and qt.shape[-1] % qt.meta["block_size"]
    ]
    if bad:
        warnings.warn(
            f"{len(bad)} layers (e.g. {bad[0]!r}) have in_features that are not a multiple of "
            "the INT4 group size; their last group is zero-padded here, but TensorRT-LLM "
            "refuses such W4A16_AWQ/W4A8_AWQ layers",
            UserWarning,
            stacklevel=3,
        )
    return bad


def modelopt_layer_tensors(
    spec: LayerExport, qt: QTensor
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Checkpoint tensors of one quantized layer and its plain-data description.

    Tensor names are relative to the layer (``weight``, ``weight_scale``, ...); the
    description is what :func:`~.modelopt_layout.decode_weight` needs to rebuild it.
    """
    tensors, extra = encode_weight(qt)
    if len(spec.weight_stages) > 1:  # W4A8: the FP8 per-tensor step of the weight
        second = spec.weight_stages[1]
        if second.amax is None:
            raise ValueError(f"layer {spec.name!r}: second weight stage has no amax")
        scale_2 = activation_scale(second)  # FP8 per-tensor: amax / 448, reciprocal rule
        if scale_2 is None:
            raise ValueError(f"layer {spec.name!r}: second weight stage is not static FP8")
        tensors["weight_scale_2"] = scale_2
    if spec.input_quantizer is not None:
        scale = activation_scale(spec.input_quantizer)
        if scale is not None:
            tensors["input_scale"] = scale
    if spec.pre_quant_scale is not None:
        # TensorRT-LLM asserts pre_quant_scale.dtype == the model dtype (W4A8/W4A16 AWQ
        # load_weights); the layout function casts it with the other float tensors.
        tensors["pre_quant_scale"] = spec.pre_quant_scale.float().reshape(-1).contiguous()
    return tensors, extra


def modelopt_quant_configs(
    layers: list[LayerExport], excluded: list[str], kv_algo: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config.json quantization_config, hf_quant_config.json)`` for ``layers``."""
    algos = sorted({s.quant_algo for s in layers})
    groups = sorted({s.group_size for s in layers if s.group_size is not None})
    quant: dict[str, Any] = {}
    if len(algos) == 1:
        quant["quant_algo"] = algos[0]
        if groups and algos[0] in ("W4A16_AWQ", "W4A8_AWQ", "W4A16_MXFP4"):
            quant["group_size"] = groups[0]
            quant["has_zero_point"] = False
            quant["pre_quant_scale"] = any(s.pre_quant_scale is not None for s in layers)
        elif algos[0] in ("NVFP4", "W4A16_NVFP4", "W4A8_NVFP4_FP8") and groups:
            quant["group_size"] = groups[0]
    else:
        quant["quant_algo"] = "MIXED_PRECISION" if algos else None
        quant["quantized_layers"] = {
            s.name: {"quant_algo": s.quant_algo}
            | ({"group_size": s.group_size} if s.group_size is not None else {})
            for s in layers
        }
    quant["kv_cache_quant_algo"] = kv_algo
    quant["exclude_modules"] = list(excluded)
    producer = {"name": "modeloptim", "version": __version__}
    hf_quant_config = {"producer": producer, "quantization": quant}
    config_qc: dict[str, Any] = {"quant_method": "modelopt", **quant, "producer": producer}
    config_qc["ignore"] = list(excluded)
    if kv_algo == "FP8":
        config_qc["kv_cache_scheme"] = {"num_bits": 8, "type": "float", "dynamic": False}
    return config_qc, hf_quant_config
