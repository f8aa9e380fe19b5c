"""Registry of optional accelerated (CUDA/Triton) fake-quantization kernels.

The torch formats in :mod:`modeloptim.torch.quantization.formats` ask this registry for a
kernel by name when the input lives on a CUDA device. Kernels register themselves with the
:meth:`KernelRegistry.register` decorator when ``modeloptim.torch.quantization.triton`` is
imported. That import happens lazily, on the first :meth:`KernelRegistry.get`, so importing
``modeloptim`` never imports triton. A missing package (``ImportError``) simply means that no
kernel is available and the torch path runs.

Kernel contracts (all compute in float32 and return ``x.dtype``; the caller pads/reshapes):

- ``"int"``: ``(x, amax, num_bits, unsigned, narrow_range) -> Tensor | None``; ``amax`` is
  float32, broadcastable to ``x`` (numel 1, or exactly one non-1 dim).
- ``"fp8"``: ``(x, amax, exponent_bits) -> Tensor | None`` (4 -> E4M3, 5 -> E5M2).
- ``"int_dynamic_block"``: ``(x2d [N, B], num_bits, unsigned, narrow_range)``.
- ``"fp8_dynamic_block"``: ``(x2d [N, B], exponent_bits)``.
- ``"nvfp4"``: ``(x2d [N, 16], global_amax 0-d float32)``.
- ``"mx"``: ``(x2d [N, 32], elem)`` with ``elem`` in ``{"e4m3", "e5m2", "e3m2", "e2m3",
  "e2m1", "int8"}``.

A kernel returns ``None`` when it does not support the given layout; the torch path is used.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["CUDA_KERNELS", "KernelRegistry"]

KernelFn = Callable[..., Any]


class KernelRegistry:
    """Name -> kernel function map, filled lazily by importing a kernel package.

    Args:
        package: module imported on the first :meth:`get` so that its kernels register.
    """

    def __init__(self, package: str = "modeloptim.torch.quantization.triton") -> None:
        self._package = package
        self._kernels: dict[str, KernelFn] = {}
        self._loaded = False
        self._lock = threading.Lock()

    def register(self, name: str) -> Callable[[KernelFn], KernelFn]:
        """Decorator registering ``fn`` under ``name`` (a later registration replaces it)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"register: name must be a non-empty str, got {name!r}")

        def deco(fn: KernelFn) -> KernelFn:
            self._kernels[name] = fn
            return fn

        return deco

    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            # No triton (or no kernel package): the torch implementation is used.
            with contextlib.suppress(ImportError):
                importlib.import_module(self._package)

    def get(self, name: str) -> KernelFn | None:
        """Return the kernel registered as ``name``, or ``None`` when there is none."""
        if not self._loaded:
            self._load()
        return self._kernels.get(name)

    def names(self) -> list[str]:
        """Names of the registered kernels (after the lazy import)."""
        if not self._loaded:
            self._load()
        return sorted(self._kernels)

    def unregister(self, name: str) -> None:
        """Remove a kernel (used by tests and to force the torch path)."""
        self._kernels.pop(name, None)


CUDA_KERNELS = KernelRegistry()


def register(name: str) -> Callable[[KernelFn], KernelFn]:
    """Register a kernel into :data:`CUDA_KERNELS` (module-level shortcut)."""
    return CUDA_KERNELS.register(name)


def get(name: str) -> KernelFn | None:
    """Look up a kernel in :data:`CUDA_KERNELS`."""
    return CUDA_KERNELS.get(name)
