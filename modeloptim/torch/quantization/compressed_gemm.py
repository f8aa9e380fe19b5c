"""Compressed linear layers on CUDA run real low-bit GEMMs instead of dequantize + matmul.

After :func:`~modeloptim.torch.quantization.compress.compress`, a quantized ``nn.Linear``
holds a packed :class:`~.compress.CompressedWeight`. Its generic forward dequantizes the whole
weight and calls ``F.linear`` (what runs on CPU, bit-equal to the fake-quantized model). On a
CUDA input, inference (no grad) instead hands the packed weight to the GEMM backend registry
(:func:`~.backends.quantized_linear`): INT4 block and NVFP4 weights run the W4A16 Triton
kernels, which read the packed bytes (decode GEMV for one or two rows, tensor-core tiles up to
128 rows, one-pass dequantization + cuBLAS for prefill sizes). The input and output
quantizers still apply (NVFP4's fake-quantized activations, AWQ's pre-quant scale), so the
result equals the fake-quantized layer up to float32 accumulation order.

Formats reach the backends through :data:`BACKEND_WEIGHTS`, one small converter per packed
format (``QTensor`` -> ``QuantizedWeight`` sharing the same storage, or ``None`` where the
kernels cannot take the layout). Set :data:`ENABLED` to ``False`` to keep the dequantize +
matmul path everywhere (e.g. to reproduce fake-quant outputs bit for bit on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modeloptim.torch.quantization.backends import QuantizedWeight, WeightFormat
from modeloptim.torch.quantization.qtensor import QTensor

__all__ = ["BACKEND_WEIGHTS", "ENABLED", "BackendWeightRegistry", "compressed_linear_forward"]

#: Route compressed linear layers on CUDA through the GEMM backends (see the module docstring).
ENABLED = True
#: Also on CPU tensors (tests run the Triton kernels in Triton's interpreter this way).
_ON_CPU = False

Converter = Callable[[QTensor], "QuantizedWeight | None"]


class BackendWeightRegistry:
    """Packed format name -> converter to the GEMM backends' :class:`QuantizedWeight`."""

    def __init__(self) -> None:
        self._converters: dict[str, Converter] = {}

    def register(self, fmt: str) -> Callable[[Converter], Converter]:
        """Decorator registering the converter for ``QTensor`` format ``fmt``."""

        def deco(fn: Converter) -> Converter:
            self._converters[fmt] = fn
            return fn

        return deco

    def __contains__(self, fmt: object) -> bool:
        return fmt in self._converters

    def convert(self, qt: QTensor) -> QuantizedWeight | None:
        """``qt`` as a backend weight, or ``None`` (format or layout the backends do not take)."""
        fn = self._converters.get(qt.format_name)
        return fn(qt) if fn is not None and len(qt.shape) == 2 else None


#: The converters :func:`compressed_linear_forward` consults.
BACKEND_WEIGHTS = BackendWeightRegistry()


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


@BACKEND_WEIGHTS.register("int4_block")
def _int4_block(qt: QTensor) -> QuantizedWeight | None:
    # same nibble packing; the backend multiplies by amax / 7 where the QTensor divides by
    # 7 / amax (equal up to one float32 rounding of the scale)
    n, k = qt.shape
    bs = int(qt.meta["block_size"])
    if not _pow2(bs) or k % bs:
        return None
    scale = qt.weight_scale().reshape(n, k // bs)  # type: ignore[attr-defined]
    return QuantizedWeight(WeightFormat.INT4, qt.data, scale, (n, k), bs)


@BACKEND_WEIGHTS.register("nvfp4")
def _nvfp4(qt: QTensor) -> QuantizedWeight | None:
    n, k = qt.shape
    if int(qt.meta.get("block_size", 16)) != 16 or k % 16:
        return None
    block_scale = qt.scales["block_scale"].reshape(n, k // 16)
    scale_2 = qt.scales["scale_2"].float().reshape(1)
    return QuantizedWeight(WeightFormat.NVFP4, qt.data, block_scale, (n, k), 16, scale_2)


def _backend_weight(cw: nn.Module) -> QuantizedWeight | None:
    """The layer's packed weight as a backend weight, cached while its buffers are unchanged."""
    bufs = [b for b in cw._buffers.values() if b is not None]
    key = tuple((b.data_ptr(), b._version, b.device) for b in bufs)
    hit = cw.__dict__.get("_backend_weight")
    if hit is not None and hit[0] == key:
        return hit[1]  # type: ignore[no-any-return]
    qw = BACKEND_WEIGHTS.convert(cw.qtensor)  # type: ignore[arg-type]
    cw.__dict__["_backend_weight"] = (key, qw)
    return qw


def compressed_linear_forward(layer: nn.Module, x: Any) -> torch.Tensor | None:
    """``layer(x)`` through a GEMM backend, or ``None`` when the generic path must run.

    Taken for a compressed plain linear layer in inference (no grad) on a CUDA tensor
    ``x [..., K]`` whose weight quantizer has no stage left to apply on top of the packed
    weight (W4A8's FP8 step would) and whose packed format converts (:data:`BACKEND_WEIGHTS`).
    Returns ``[..., N]`` in ``x.dtype``.
    """
    if not ENABLED or torch.is_grad_enabled() or not isinstance(x, torch.Tensor):
        return None
    if not (x.is_cuda or _ON_CPU) or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return None
    cw = layer._modules.get("weight")
    wq = layer._modules.get("weight_quantizer")
    if cw is None or (wq is not None and wq.is_enabled):
        return None
    qw = _backend_weight(cw)
    if qw is None or x.shape[-1] != qw.shape[1]:
        return None
    from modeloptim.torch.quantization.backends import quantized_linear

    iq: Any = layer._modules["input_quantizer"]
    oq: Any = layer._modules["output_quantizer"]
    bias = layer._parameters.get("bias")
    if bias is not None and bias.dtype != x.dtype:
        return None
    xq = iq(x)
    y = quantized_linear(xq.reshape(-1, qw.shape[1]), qw, bias)
    return oq(y.reshape(*x.shape[:-1], qw.shape[0]))  # type: ignore[no-any-return]
