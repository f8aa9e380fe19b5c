"""Quantized ``[N, K]`` linear weights as the GEMM backends consume them.

Each format stores codes plus the multiplier that turns them back into values:

* ``fp8_per_tensor`` / ``fp8_per_channel``: float8_e4m3fn codes ``[N, K]``; ``scale`` is
  ``1 / (448 / amax)`` (0-d or ``[N]``, float32), so ``codes * scale`` is exactly the FP8
  fake quantization of DESIGN.md §2.
* ``int8``: int8 codes ``[N, K]`` (narrow range), ``scale = amax / 127`` per row (float32).
* ``int4``: INT4 codes in [-7, 7] packed two per byte ``[N, K/2]`` (even index low nibble),
  ``scale = amax / 7`` per group of ``group_size`` along K, ``[N, K/group_size]``, stored in
  the activation dtype as W4A16 kernels expect.
* ``nvfp4``: E2M1 codes packed ``[N, K/2]``, per-16 block scales float8_e4m3fn
  ``[N, K/16]`` and the float32 ``global_scale = global_amax / 2688``; values are
  ``e2m1 * (block_scale * global_scale)``, exactly the NVFP4 fake quantization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch

from .packing import (
    e2m1_decode,
    e2m1_encode,
    e2m1_round,
    pack_int4,
    pack_nibbles,
    unpack_int4,
    unpack_nibbles,
)


class WeightFormat(str, Enum):
    """Storage formats of quantized linear weights."""

    FP8_PER_TENSOR = "fp8_per_tensor"
    FP8_PER_CHANNEL = "fp8_per_channel"
    INT8 = "int8"
    INT4 = "int4"
    NVFP4 = "nvfp4"


@dataclass
class QuantizedWeight:
    """A quantized ``[N, K]`` weight (see the module docstring for each format's fields)."""

    format: WeightFormat
    data: torch.Tensor
    scale: torch.Tensor
    shape: tuple[int, int]
    group_size: int = 0
    global_scale: torch.Tensor | None = None
    #: INT4 only, optional: the codes again in the decode GEMV's interleaved word layout
    #: (``packing.interleave_int4_words``), built on first use by the W4A16 backend when
    #: ``w4a16.GEMV_ILV`` is on (+0.5 byte per weight); ``data`` keeps the plain packing.
    decode_words: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The ``[N, K]`` weight values the codes stand for, in ``dtype``."""
        n, k = self.shape
        if self.format in (WeightFormat.FP8_PER_TENSOR, WeightFormat.FP8_PER_CHANNEL):
            s = self.scale.float().reshape(-1, 1) if self.scale.numel() > 1 else self.scale.float()
            w = self.data.float() * s
        elif self.format == WeightFormat.INT8:
            w = self.data.float() * self.scale.float()[:, None]
        elif self.format == WeightFormat.INT4:
            q = unpack_int4(self.data).float().reshape(n, k // self.group_size, self.group_size)
            w = (q * self.scale.float()[..., None]).reshape(n, k)
        else:
            assert self.global_scale is not None
            vals = e2m1_decode(unpack_nibbles(self.data)).reshape(n, k // 16, 16)
            d = self.scale.float() * self.global_scale.float()
            w = (vals * d[..., None]).reshape(n, k)
        return w.to(dtype)


def _check_weight(w: torch.Tensor, multiple: int, name: str) -> None:
    if w.dim() != 2:
        raise ValueError(f"weight: expected a 2-D [N, K] tensor, got shape {tuple(w.shape)}")
    if w.shape[1] % multiple:
        raise ValueError(f"weight: K={w.shape[1]} must be a multiple of {multiple} for {name}")


def quantize_fp8(w: torch.Tensor, per_channel: bool = False) -> QuantizedWeight:
    """FP8 E4M3 weight with a per-tensor or per-output-channel amax scale."""
    _check_weight(w, 1, "fp8")
    wf = w.float()
    amax = wf.abs().amax(dim=1, keepdim=True) if per_channel else wf.abs().amax()
    scale_q = torch.div(torch.full_like(amax, 448.0), amax.clamp(min=2.0**-24))
    codes = torch.clamp(wf * scale_q, -448.0, 448.0).to(torch.float8_e4m3fn)
    fmt = WeightFormat.FP8_PER_CHANNEL if per_channel else WeightFormat.FP8_PER_TENSOR
    inv = torch.reciprocal(scale_q).reshape(-1 if per_channel else ())
    return QuantizedWeight(fmt, codes, inv, (w.shape[0], w.shape[1]))


def quantize_int8(w: torch.Tensor) -> QuantizedWeight:
    """INT8 weight, narrow range, one amax per output channel."""
    _check_weight(w, 1, "int8")
    wf = w.float()
    amax = wf.abs().amax(dim=1, keepdim=True).clamp(min=2.0**-24)
    scale_q = torch.div(torch.full_like(amax, 127.0), amax)
    codes = torch.clamp(torch.round(wf * scale_q), -127, 127).to(torch.int8)
    scale = (amax / 127.0).reshape(-1)
    return QuantizedWeight(WeightFormat.INT8, codes, scale, (w.shape[0], w.shape[1]))


def quantize_int4(w: torch.Tensor, group_size: int = 128) -> QuantizedWeight:
    """INT4 (AWQ-style) weight: symmetric [-7, 7] codes per group of ``group_size`` along K.

    The per-group scale ``amax / 7`` is stored in ``w.dtype`` (the activation dtype of a W4A16
    GEMM) and the codes are rounded against that stored scale, so dequantization is exact.
    """
    if group_size % 2 or group_size <= 0:
        raise ValueError(f"group_size must be a positive even number, got {group_size}")
    _check_weight(w, group_size, "int4")
    n, k = w.shape
    wg = w.float().reshape(n, k // group_size, group_size)
    amax = wg.abs().amax(dim=-1).clamp(min=2.0**-24)
    scale = (amax / 7.0).to(w.dtype if w.dtype.is_floating_point else torch.float32)
    q = torch.clamp(torch.round(wg / scale.float()[..., None]), -7, 7).to(torch.int8)
    return QuantizedWeight(WeightFormat.INT4, pack_int4(q.reshape(n, k)), scale, (n, k), group_size)


def quantize_nvfp4(w: torch.Tensor, global_amax: torch.Tensor | None = None) -> QuantizedWeight:
    """NVFP4 weight: E2M1 codes, FP8 E4M3 scale per 16 along K, float32 global scale."""
    _check_weight(w, 16, "nvfp4")
    n, k = w.shape
    wf = w.float().reshape(n, k // 16, 16)
    ga = wf.abs().amax() if global_amax is None else global_amax.float().reshape(())
    scale_2 = torch.div(ga, torch.full_like(ga, 2688.0))
    s = torch.div(wf.abs().amax(-1), 6.0 * scale_2)
    s = torch.where(s == 0, torch.ones_like(s), s).clamp(2.0**-9, 448.0).to(torch.float8_e4m3fn)
    d = s.float() * scale_2
    q = e2m1_round(wf / d[..., None])
    codes = pack_nibbles(e2m1_encode(q).reshape(n, k))
    return QuantizedWeight(WeightFormat.NVFP4, codes, s, (n, k), 16, scale_2)
