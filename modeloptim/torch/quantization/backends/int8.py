"""INT8 GEMM through ``torch._int_mm`` (int8 x int8 -> int32) with dynamic per-row activations.

Activations are quantized per row (narrow range, the INT rule of DESIGN.md §2 with the row's
amax) and the int32 accumulator is scaled by the row and column scales; on CUDA both are one
Triton pass each (the eager versions cost several passes over ``M x N`` and made the linear
slower than bf16). Chosen over the dequantize backend only on CUDA and for ``M > 16``
(``_int_mm``'s minimum).
"""

from __future__ import annotations

import torch

from ._device import triton_usable
from .registry import GEMM_BACKENDS
from .weights import QuantizedWeight, WeightFormat

_TINY = 2.0**-24


def _quant_torch(x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x2d.float()
    amax = xf.abs().amax(dim=1, keepdim=True).clamp(min=_TINY)
    scale = torch.div(torch.full_like(amax, 127.0), amax)
    q = torch.clamp(torch.round(xf * scale), -127, 127).to(torch.int8)
    return q, torch.reciprocal(scale)


def quantize_activation_int8(x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row INT8 codes of ``x2d`` ``[M, K]`` and the float32 dequant scale ``[M, 1]``."""
    if not triton_usable(x2d):
        return _quant_torch(x2d)
    from ..triton._common import native_fp8
    from ._kernels import quant_rows_kernel

    x2d = x2d if x2d.stride(-1) == 1 else x2d.contiguous()
    m, k = x2d.shape
    q = torch.empty((m, k), dtype=torch.int8, device=x2d.device)
    inv = torch.empty((m, 1), dtype=torch.float32, device=x2d.device)
    quant_rows_kernel[(m,)](
        x2d,
        q.view(torch.uint8),
        inv,
        inv,
        k,
        x2d.stride(0),
        PER_ROW=True,
        OUT_INT8=True,
        NATIVE=native_fp8(),
        TINY=_TINY,
        BLOCK=min(2048, max(16, 1 << (k - 1).bit_length())),
        num_warps=4,
    )
    return q, inv


def scale_accumulator(
    acc: torch.Tensor,
    sa: torch.Tensor,
    sw: torch.Tensor,
    dtype: torch.dtype,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``acc [M, N] (int32) * sa [M, 1] * sw [N] (+ bias)`` in ``dtype``."""
    if not triton_usable(acc):
        y = (acc.float() * sa * sw.float()[None, :]).to(dtype)
        return y if bias is None else y + bias.to(dtype)
    from ._kernels import scale_epilogue_kernel

    m, n = acc.shape
    y = torch.empty((m, n), dtype=dtype, device=acc.device)
    grid = (-(-m // 32), -(-n // 128))
    scale_epilogue_kernel[grid](
        acc,
        sa.reshape(-1).float(),
        sw.reshape(-1).float(),
        bias if bias is not None else y,
        y,
        m,
        n,
        HAS_BIAS=bias is not None,
        BLOCK_M=32,
        BLOCK_N=128,
        num_warps=4,
    )
    return y


def _int8_available(x: torch.Tensor, w: QuantizedWeight) -> bool:
    n, k = w.shape
    rows = x.numel() // max(1, x.shape[-1])
    return x.is_cuda and hasattr(torch, "_int_mm") and rows > 16 and k % 8 == 0 and n % 8 == 0


@GEMM_BACKENDS.register("int8_int_mm", (WeightFormat.INT8,), priority=10, available=_int8_available)
def int8_linear(
    x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x [M, K] @ W.T`` with W8A8 integer tensor cores; ``[M, N]`` in ``x.dtype``."""
    q, sa = quantize_activation_int8(x)
    acc = torch._int_mm(q, weight.data.t())
    return scale_accumulator(acc, sa, weight.scale, x.dtype, bias)
