"""Autograd for fake quantization: straight-through estimator (STE) with clipping.

Forward is the format's fake quantization. Backward:

- grad to ``x``: ``grad_out`` where ``|x| <= amax`` (amax broadcast through the format's
  granularity, blocks included), zero outside. Formats without a calibrated amax (dynamic
  or MX) pass the gradient through unchanged, since every element lies within its own
  dynamic range.
- grad to ``amax`` (learnable amax): the clipped-STE gradient
  ``sum(grad_out * sign(x))`` over the elements with ``|x| > amax``, reduced to amax's shape.
  This is the gradient of ``clamp(x, -amax, amax)`` with respect to its bounds.
"""

from __future__ import annotations

from typing import Any

import torch

from .formats.base import QuantFormat
from .formats.fp8 import FP8Format
from .formats.granularity import Blocked, PerChannel, PerTensor
from .formats.integer import IntegerFormat
from .kernel_registry import CUDA_KERNELS

__all__ = ["FakeQuantSTE", "fake_quant_ste", "fake_tensor_quant", "scaled_e4m3"]


class FakeQuantSTE(torch.autograd.Function):
    """``(x, amax, format) -> format.fake_quant(x, amax)`` with a clipped STE backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, amax: torch.Tensor | None, fmt: QuantFormat
    ) -> torch.Tensor:
        """Fake-quantize ``x`` (any shape) with ``amax`` in the format's amax shape."""
        ctx.fmt = fmt
        ctx.has_amax = amax is not None
        ctx.save_for_backward(x, amax if amax is not None else torch.empty(0))
        return fmt.fake_quant(x, amax)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        """Masked gradient to ``x``; clipped-STE gradient to ``amax`` when it needs one."""
        x, amax = ctx.saved_tensors
        g = ctx.fmt.amax_granularity
        if not ctx.has_amax or g is None:
            return grad_out, None, None
        x_view, restore = g.to_view(x)
        a = g.amax_for_view(amax, x_view)
        if x.is_cuda and not ctx.needs_input_grad[1] and not isinstance(g, Blocked):
            # Fused mask kernel (Triton) when registered: one read of x and grad_out.
            kernel = CUDA_KERNELS.get("ste_backward")
            grad = None if kernel is None else kernel(x, grad_out, a)
            if grad is not None:
                return grad, None, None
        outside = x_view.abs() > a
        g_view, _ = g.to_view(grad_out)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = restore(g_view.masked_fill(outside, 0))
        grad_amax = None
        if ctx.needs_input_grad[1]:
            contrib = torch.where(outside, g_view.float() * torch.sign(x_view.float()), 0.0)
            grad_amax = g.reduce_sum(contrib, amax).to(amax.dtype)
        return grad_x, grad_amax, None


def fake_quant_ste(x: torch.Tensor, amax: torch.Tensor | None, fmt: QuantFormat) -> torch.Tensor:
    """Differentiable fake quantization (see module docstring for the gradients)."""
    if not torch.is_grad_enabled() or not (
        x.requires_grad or (amax is not None and amax.requires_grad)
    ):
        return fmt.fake_quant(x, amax)
    return FakeQuantSTE.apply(x, amax, fmt)


def _amax_granularity(inputs: torch.Tensor, amax: torch.Tensor) -> PerTensor | PerChannel:
    if amax.numel() == 1:
        return PerTensor()
    if amax.ndim != inputs.ndim:
        raise ValueError(
            f"amax: shape {tuple(amax.shape)} must be a scalar or keep the input's "
            f"{inputs.ndim} dims (size 1 on reduced dims)"
        )
    return PerChannel(tuple(d for d in range(amax.ndim) if amax.shape[d] != 1) or (0,))


def fake_tensor_quant(
    inputs: torch.Tensor,
    amax: torch.Tensor,
    num_bits: int = 8,
    unsigned: bool = False,
    narrow_range: bool = True,
) -> torch.Tensor:
    """Functional INT fake quantization with STE (ModelOpt's ``fake_tensor_quant`` shape).

    Args:
        inputs: float tensor of any shape.
        amax: scalar, or keepdim-shaped per-channel amax (e.g. ``[out, 1]`` for ``[out, in]``).
        num_bits: 2..8.
        unsigned: unsigned range.
        narrow_range: symmetric signed range (DESIGN default).
    """
    amax = torch.as_tensor(amax, dtype=torch.float32, device=inputs.device)
    fmt = IntegerFormat(num_bits, unsigned, narrow_range, _amax_granularity(inputs, amax))
    return fake_quant_ste(inputs, amax, fmt)


def scaled_e4m3(
    inputs: torch.Tensor,
    amax: torch.Tensor,
    E: int = 4,  # noqa: N803 - ModelOpt keyword names
    M: int = 3,  # noqa: N803
) -> torch.Tensor:
    """Functional FP8 fake quantization with STE (ModelOpt's ``scaled_e4m3`` shape).

    Args:
        inputs: float tensor of any shape.
        amax: scalar or keepdim-shaped per-channel amax.
        E: exponent bits (4 -> E4M3, 5 -> E5M2).
        M: mantissa bits (3 or 2, must match ``E``).
    """
    if (E, M) not in ((4, 3), (5, 2)):
        raise ValueError(f"E, M: FP8 supports (4, 3) and (5, 2), got ({E}, {M})")
    amax = torch.as_tensor(amax, dtype=torch.float32, device=inputs.device)
    return fake_quant_ste(inputs, amax, FP8Format(E, _amax_granularity(inputs, amax)))
