"""Triton fake-quant kernels; importing this package registers them for CUDA tensors.

The quantization formats look kernels up by name in
``modeloptim.torch.quantization.kernel_registry`` (``CUDA_KERNELS``), whose first lookup
imports this package. Registered names and signatures (all compute in float32, return
``x.dtype``, and return None for a layout they do not handle so the caller uses PyTorch):

* ``"int"``: ``(x, amax, num_bits, unsigned, narrow_range)``; amax per tensor or per channel.
* ``"fp8"``: ``(x, amax, exponent_bits)``; 4 = E4M3, 5 = E5M2.
* ``"int_dynamic_block"``: ``(x2d [N, B], num_bits, unsigned, narrow_range)``.
* ``"fp8_dynamic_block"``: ``(x2d [N, B], exponent_bits)``.
* ``"nvfp4"``: ``(x2d [N, 16], global_amax)``.
* ``"mx"``: ``(x2d [N, 32], elem)``; elem in e4m3, e5m2, e3m2, e2m3, e2m1, int8.
* ``"ste_backward"``: ``(x, grad_out, amax) -> grad_out * (|x| <= amax)`` (fused STE mask).

Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (used by the CI tests).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .blockwise import (
    fake_quant_fp8_dynamic_block,
    fake_quant_int_dynamic_block,
    fake_quant_mx,
    fake_quant_nvfp4,
)
from .elementwise import fake_quant_fp8, fake_quant_int, ste_backward

#: Registry name -> kernel wrapper.
KERNELS: dict[str, Callable[..., Any]] = {
    "int": fake_quant_int,
    "fp8": fake_quant_fp8,
    "int_dynamic_block": fake_quant_int_dynamic_block,
    "fp8_dynamic_block": fake_quant_fp8_dynamic_block,
    "nvfp4": fake_quant_nvfp4,
    "mx": fake_quant_mx,
    "ste_backward": ste_backward,
}


def register_kernels() -> bool:
    """Register :data:`KERNELS` into ``kernel_registry.CUDA_KERNELS``; False if it is missing.

    Accepts either a module-level ``register(name)`` decorator or ``CUDA_KERNELS.register``.
    Registering twice is harmless (the registry maps a name to one function).
    """
    try:
        registry = importlib.import_module("modeloptim.torch.quantization.kernel_registry")
    except ImportError:
        return False
    register = getattr(registry, "register", None)
    if register is None and hasattr(registry, "CUDA_KERNELS"):
        register = getattr(registry.CUDA_KERNELS, "register", None)
    if register is None:
        return False
    for name, fn in KERNELS.items():
        register(name)(fn)
    return True


register_kernels()

__all__ = [
    "KERNELS",
    "fake_quant_fp8",
    "fake_quant_fp8_dynamic_block",
    "fake_quant_int",
    "fake_quant_int_dynamic_block",
    "fake_quant_mx",
    "fake_quant_nvfp4",
    "register_kernels",
    "ste_backward",
]
