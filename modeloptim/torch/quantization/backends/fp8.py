"""FP8 E4M3 GEMM through ``torch._scaled_mm`` with dynamic activation quantization.

Per-tensor weights pair with a per-tensor activation scale; per-channel weights pair with
per-row (per-token) activation scales (``_scaled_mm`` row-wise scaling, bf16 output).
Activations are quantized by one Triton pass per row on CUDA (read once, write E4M3 bytes);
the numerics are the FP8 rule of DESIGN.md §2 with the tensor's or the row's amax.
"""

from __future__ import annotations

import torch

from ._device import cuda_capability, triton_usable
from .registry import GEMM_BACKENDS
from .weights import QuantizedWeight, WeightFormat

#: ``use_fast_accum`` of ``_scaled_mm`` (Hopper's faster, less precise FP8 accumulation).
FAST_ACCUM = False
_TINY = 2.0**-24


def _quant_torch(x2d: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x2d.float()
    amax = xf.abs().amax(dim=1, keepdim=True) if per_row else xf.abs().amax()
    scale = torch.div(torch.full_like(amax, 448.0), amax.clamp(min=_TINY))
    q = torch.clamp(xf * scale, -448.0, 448.0).to(torch.float8_e4m3fn)
    return q, torch.reciprocal(scale)


def quantize_activation_fp8(x2d: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic E4M3 quantization of ``x2d`` ``[M, K]``.

    Returns:
        ``(codes float8_e4m3fn [M, K], dequant scale float32 [M, 1] if per_row else 0-d)``.
    """
    if not triton_usable(x2d):
        return _quant_torch(x2d, per_row)
    from ..triton._common import native_fp8
    from ._kernels import quant_rows_kernel

    x2d = x2d if x2d.stride(-1) == 1 else x2d.contiguous()
    m, k = x2d.shape
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x2d.device)
    if per_row:
        amax = torch.empty(1, device=x2d.device)
        inv = torch.empty((m, 1), dtype=torch.float32, device=x2d.device)
    else:
        lo, hi = torch.aminmax(x2d)
        amax = torch.maximum(-lo, hi).float().clamp(min=_TINY)
        inv = torch.reciprocal(torch.div(torch.full_like(amax, 448.0), amax))
    quant_rows_kernel[(m,)](
        x2d,
        q.view(torch.uint8),
        amax,
        inv,
        k,
        x2d.stride(0),
        PER_ROW=per_row,
        OUT_INT8=False,
        NATIVE=native_fp8(),
        TINY=_TINY,
        BLOCK=min(2048, max(16, 1 << (k - 1).bit_length())),
        num_warps=4,
    )
    return q, inv


def _fp8_available(x: torch.Tensor, w: QuantizedWeight) -> bool:
    n, k = w.shape
    if cuda_capability(x) < (8, 9) or not hasattr(torch, "_scaled_mm"):
        return False
    if k % 16 or n % 16:
        return False
    if w.format == WeightFormat.FP8_PER_CHANNEL:
        return x.dtype == torch.bfloat16  # row-wise scaling produces bf16 only
    return x.dtype in (torch.bfloat16, torch.float16, torch.float32)


@GEMM_BACKENDS.register(
    "fp8_scaled_mm",
    (WeightFormat.FP8_PER_TENSOR, WeightFormat.FP8_PER_CHANNEL),
    priority=20,
    available=_fp8_available,
)
def fp8_linear(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """``x [M, K] @ W.T`` with W in FP8 and x quantized to FP8 on the fly; ``[M, N]``."""
    per_row = weight.format == WeightFormat.FP8_PER_CHANNEL
    q, inv = quantize_activation_fp8(x, per_row)
    return fp8_gemm(q, inv, weight, x.dtype, bias)


def fp8_gemm(
    q: torch.Tensor,
    inv_a: torch.Tensor,
    weight: QuantizedWeight,
    out_dtype: torch.dtype,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The FP8 product of already-quantized activations ``q`` (scale ``inv_a``) and ``weight``."""
    if weight.format == WeightFormat.FP8_PER_CHANNEL:
        scale_b = weight.scale.float().reshape(1, -1)
        scale_a = inv_a.reshape(-1, 1)
    else:
        scale_b = weight.scale.float().reshape(())
        scale_a = inv_a.reshape(())
    y = torch._scaled_mm(
        q,
        weight.data.t(),
        scale_a=scale_a,
        scale_b=scale_b,
        out_dtype=out_dtype,
        use_fast_accum=FAST_ACCUM,
    )
    y = y[0] if isinstance(y, tuple) else y  # torch < 2.5 returned (out, amax)
    return y if bias is None else y + bias.to(y.dtype)
