"""The ModelOpt checkpoint layout (what TensorRT-LLM, vLLM and SGLang read).

Per quantized linear ``<name>`` the safetensors hold:

==================  ==============================================================  ==========
tensor              content                                                         formats
==================  ==============================================================  ==========
``weight``          packed codes: float8_e4m3fn / int8 ``[out, in]``; uint8 two      all
                    4-bit codes: INT4 ``[out/2, in]`` (row pairs), FP4 ``[out, in/2]``
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

W4A8_AWQ as TensorRT-LLM reads it (``W4A8_AWQ_LinearMethod``, NVIDIA/TensorRT-LLM
``tensorrt_llm/_torch/modules/linear.py``): int4 value ``code * weight_scale`` (group of
``group_size`` input columns), FP8 weight ``fp8(value / weight_scale_2)``, GEMM rescaled by
``input_scale * weight_scale_2``; ``pre_quant_scale`` must have the model dtype. Known gap:
TensorRT-LLM casts ``weight_scale`` to float16 when loading, so its int4 values match ours
only where the float32 per-group scales are float16-representable (not enforced here), and it
requires ``in_features % group_size == 0`` (we pad the last group instead).

Each format is one :class:`WeightCodec` registered with :data:`WEIGHT_CODECS` (keyed by the
:class:`QTensor` format name): ``encode`` gives the checkpoint tensors, ``decode`` rebuilds the
packed tensor. Every codec decodes bit for bit: FP8 weights store ``fl(1/m)``, the factor the
codes are multiplied by; INT weights store an ``s`` with ``fl(1/s) == m`` (see
:mod:`.scales`); NVFP4 and MX scales are stored as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from modeloptim.torch.export.packers import UnsupportedFormatError
from modeloptim.torch.export.scales import ReciprocalRule, decode_fp8_weight_multiplier
from modeloptim.torch.quantization.qtensor import QTENSOR_TYPES, INT4BlockQTensor, QTensor
from modeloptim.torch.quantization.qtensor.base import true_div
from modeloptim.torch.quantization.qtensor.packing import pack_nibbles

__all__ = [
    "WEIGHT_CODECS",
    "WeightCodec",
    "decode_weight",
    "encode_weight",
    "pack_int4_rows",
    "unpack_int4_rows",
]


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


# the same rules as snap_model_scales uses for these weights (bound = largest code)
_INT_RULES = {"int8": ReciprocalRule(127.0), "int4_block": ReciprocalRule(7.0)}


def _weight_scale_shape(ws: torch.Tensor, qt: QTensor) -> torch.Tensor:
    if ws.numel() == 1:
        return ws.reshape(())
    per_channel = qt.format_name in ("int8", "fp8_e4m3") and qt.meta.get("block") is None
    if per_channel and ws.ndim == 2 and ws.shape[1] == 1:
        return ws.reshape(-1)  # per-output-channel [out, 1] -> [out]; INT4 stays [out, in/g]
    return ws


def _int_weight_scale(qt: QTensor) -> torch.Tensor:
    m = qt.scales["scale"].float()
    # fl(1/s) == m: snap_model_scales made every INT multiplier expressible
    s, _ = _INT_RULES[qt.format_name].encode_multiplier(m)
    s = torch.where(torch.isnan(s), true_div(1.0, m), s)
    return _weight_scale_shape(s, qt).contiguous()


def _int8_encode(qt: QTensor) -> dict[str, torch.Tensor]:
    return {"weight": qt.data, "weight_scale": _int_weight_scale(qt)}


def _int_decode_scale(t: dict[str, torch.Tensor], extra: dict[str, Any]) -> torch.Tensor:
    shape = tuple(extra["scale_shapes"]["scale"])
    return true_div(1.0, t["weight_scale"].float()).reshape(shape)


def _int8_decode(t: dict[str, torch.Tensor], extra: dict[str, Any]) -> QTensor:
    return _build(extra, t["weight"], {"scale": _int_decode_scale(t, extra)})


WEIGHT_CODECS.register("int8", WeightCodec(_int8_encode, _int8_decode))


def pack_int4_rows(codes: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` int4 codes -> ``[out / 2, in]`` uint8, row ``2i`` in the low nibble.

    The ModelOpt INT4 (W4A16_AWQ / W4A8_AWQ) checkpoint layout: pairs of *output* rows share
    a byte (``pack_int4_in_uint8`` in NVIDIA/Model-Optimizer
    ``modelopt/torch/export/quant_utils.py``); TensorRT-LLM reads it as ``weight.T`` of shape
    ``[in, out / 2]`` (``W4A8_AWQ_LinearMethod`` / ``W4A16_AWQ_LinearMethod`` in
    NVIDIA/TensorRT-LLM ``tensorrt_llm/_torch/modules/linear.py``).
    """
    if codes.ndim != 2 or codes.shape[0] % 2:
        raise UnsupportedFormatError(
            f"weight: INT4 checkpoints pack pairs of output rows; shape {tuple(codes.shape)} "
            "needs a 2-D weight with an even number of rows"
        )
    c = codes.to(torch.int16) & 0x0F
    return (c[0::2] | (c[1::2] << 4)).to(torch.uint8).contiguous()


def unpack_int4_rows(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4_rows`: int8 codes in [-8, 7], ``[out, in]``."""
    p = packed.to(torch.int16)
    rows = torch.stack((p & 0x0F, p >> 4), dim=1).reshape(-1, p.shape[1])
    return torch.where(rows >= 8, rows - 16, rows).to(torch.int8)


def _int4_encode(qt: QTensor) -> dict[str, torch.Tensor]:
    assert isinstance(qt, INT4BlockQTensor)
    return {"weight": pack_int4_rows(qt.codes()), "weight_scale": _int_weight_scale(qt)}


def _int4_decode(t: dict[str, torch.Tensor], extra: dict[str, Any]) -> QTensor:
    codes = unpack_int4_rows(t["weight"])
    return _build(extra, pack_nibbles(codes), {"scale": _int_decode_scale(t, extra)})


WEIGHT_CODECS.register("int4_block", WeightCodec(_int4_encode, _int4_decode))


def _fp8_encode(qt: QTensor) -> dict[str, torch.Tensor]:
    # fl(1/m) is the factor our dequantization multiplies the codes by: engines use the same
    ws = true_div(1.0, qt.scales["scale"].float())
    return {"weight": qt.data, "weight_scale": _weight_scale_shape(ws, qt).contiguous()}


def _fp8_decode(t: dict[str, torch.Tensor], extra: dict[str, Any]) -> QTensor:
    shape = tuple(extra["scale_shapes"]["scale"])
    m = decode_fp8_weight_multiplier(t["weight_scale"]).reshape(shape)
    return _build(extra, t["weight"], {"scale": m})


WEIGHT_CODECS.register("fp8_e4m3", WeightCodec(_fp8_encode, _fp8_decode))


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
