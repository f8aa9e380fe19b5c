"""The ModelOpt checkpoint layout (what TensorRT-LLM, vLLM and SGLang read).

Per quantized linear ``<name>`` the safetensors hold:

==================  ==============================================================  ==========
tensor              content                                                         formats
==================  ==============================================================  ==========
``weight``          packed codes: float8_e4m3fn / int8 / uint8 (two 4-bit codes)    all
``weight_scale``    dequantization multiplier: float32 ``amax/448`` (0-d FP8,       all
                    ``[out]`` per-channel, ``[out/br, in/bc]`` blocks), ``amax/127``
                    ``[out]`` (INT8), ``block_amax/7`` ``[out, in/g]`` float32 (INT4),
                    float8_e4m3fn ``[out, in/16]`` (NVFP4), uint8 E8M0 ``[out, in/32]``
                    (MX)
``weight_scale_2``  NVFP4 global scale ``amax/(6*448)``; W4A8: FP8 stage ``amax/448``  NVFP4,W4A8
``input_scale``     static activation scale ``amax/maxbound`` (0-d float32)           W8A8, FP8,
                                                                                    NVFP4 ...
``pre_quant_scale`` per-input-channel smoothing factor ``[in]`` (AWQ/SmoothQuant)     when set
==================  ==============================================================  ==========

KV cache: ``<attn>.k_proj.k_scale`` and ``<attn>.v_proj.v_scale`` (``amax/448`` for FP8).

Each format is one :class:`WeightCodec` registered with :data:`WEIGHT_CODECS` (keyed by the
:class:`QTensor` format name): ``encode`` gives the checkpoint tensors, ``decode`` rebuilds the
packed tensor. Integer and FP8 multipliers are stored inverted (``1 / scale``), so decoding
may differ from the in-memory value by one float32 rounding; NVFP4 and MX decode exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from modeloptim.torch.quantization.qtensor import QTENSOR_TYPES, QTensor
from modeloptim.torch.quantization.qtensor.base import true_div

__all__ = ["WEIGHT_CODECS", "WeightCodec", "decode_weight", "encode_weight"]


@dataclass(frozen=True)
class WeightCodec:
    """Checkpoint tensors <-> packed tensor for one format."""

    encode: Callable[[QTensor], dict[str, torch.Tensor]]
    decode: Callable[[dict[str, torch.Tensor], dict[str, Any]], QTensor]


class _CodecRegistry:
    def __init__(self) -> None:
        self._codecs: dict[str, WeightCodec] = {}

    def register(self, name: str, codec: WeightCodec) -> None:
        self._codecs[name] = codec

    def get(self, name: str) -> WeightCodec:
        if name not in self._codecs:
            raise ValueError(f"format: no checkpoint codec for packed format {name!r}")
        return self._codecs[name]


WEIGHT_CODECS = _CodecRegistry()


def _build(extra: dict[str, Any], data: torch.Tensor, scales: dict[str, torch.Tensor]) -> QTensor:
    cls = QTENSOR_TYPES.get(extra["format"])
    return cls(data, scales, tuple(extra["shape"]), getattr(torch, extra["dtype"]), extra["meta"])


def _inverse_encode(qt: QTensor) -> dict[str, torch.Tensor]:
    scale = qt.scales["scale"]
    ws = true_div(1.0, scale)
    if ws.numel() == 1:
        ws = ws.reshape(())
    elif ws.ndim == 2 and ws.shape[1] == 1 and qt.meta.get("block") is None:
        ws = ws.reshape(-1)  # per-output-channel [out, 1] -> [out]
    return {"weight": qt.data, "weight_scale": ws.float().contiguous()}


def _inverse_decode(t: dict[str, torch.Tensor], extra: dict[str, Any]) -> QTensor:
    shape = tuple(extra["scale_shapes"]["scale"])
    return _build(
        extra, t["weight"], {"scale": true_div(1.0, t["weight_scale"].float()).reshape(shape)}
    )


for _name in ("int8", "int4_block", "fp8_e4m3"):
    WEIGHT_CODECS.register(_name, WeightCodec(_inverse_encode, _inverse_decode))


def _nvfp4_encode(qt: QTensor) -> dict[str, torch.Tensor]:
    return {
        "weight": qt.data,
        "weight_scale": qt.scales["block_scale"].contiguous(),
        "weight_scale_2": qt.scales["scale_2"].reshape(()).float(),
    }


def _nvfp4_decode(t: dict[str, torch.Tensor], extra: dict[str, Any]) -> QTensor:
    scales = {"block_scale": t["weight_scale"], "scale_2": t["weight_scale_2"].float().reshape(())}
    return _build(extra, t["weight"], scales)


WEIGHT_CODECS.register("nvfp4", WeightCodec(_nvfp4_encode, _nvfp4_decode))


def _mx_encode(qt: QTensor) -> dict[str, torch.Tensor]:
    return {"weight": qt.data, "weight_scale": qt.scales["scale"].contiguous()}


def _mx_decode(t: dict[str, torch.Tensor], extra: dict[str, Any]) -> QTensor:
    return _build(extra, t["weight"], {"scale": t["weight_scale"]})


for _name in ("mxfp8", "mxfp4"):
    WEIGHT_CODECS.register(_name, WeightCodec(_mx_encode, _mx_decode))


def encode_weight(qt: QTensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Checkpoint tensors of ``qt`` and the plain-data description :func:`decode_weight` needs."""
    extra = qt.extra_state()
    extra["shape"] = list(qt.shape)
    extra["scale_shapes"] = {k: list(v.shape) for k, v in qt.scales.items()}
    return WEIGHT_CODECS.get(qt.format_name).encode(qt), extra


def decode_weight(tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> QTensor:
    """Rebuild the packed weight from its checkpoint tensors (``weight``, ``weight_scale``...)."""
    return WEIGHT_CODECS.get(extra["format"]).decode(tensors, extra)
