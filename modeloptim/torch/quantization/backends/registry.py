"""Registry of real low-bit GEMM backends, chosen by weight format and hardware.

A backend computes ``y = x @ dequant(W).T + bias`` for a quantized weight without building
the dequantized matrix when it can (FP8/INT8 tensor cores, Triton W4A16 kernels). Each one
declares the formats it serves, a priority and an availability check for a device; the
registry picks the available backend with the highest priority, so a machine without FP8
tensor cores (or a CPU) falls back to the always-available dequantize-then-matmul backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .weights import QuantizedWeight, WeightFormat

GemmFn = Callable[[torch.Tensor, QuantizedWeight, "torch.Tensor | None"], torch.Tensor]
AvailableFn = Callable[[torch.Tensor, QuantizedWeight], bool]


def _always(x: torch.Tensor, w: QuantizedWeight) -> bool:
    return True


@dataclass(frozen=True)
class GemmBackend:
    """One registered GEMM implementation.

    Attributes:
        name: unique name, e.g. ``"fp8_scaled_mm"``.
        formats: weight formats it computes.
        fn: ``fn(x [..., K], weight [N, K], bias [N] | None) -> [..., N]`` in ``x.dtype``.
        priority: larger wins among available backends.
        available: ``available(x, weight)``: whether it can run these operands here.
    """

    name: str
    formats: frozenset[WeightFormat]
    fn: GemmFn
    priority: int = 0
    available: AvailableFn = field(default=_always)


class GemmBackendRegistry:
    """Named GEMM backends; register with :meth:`register`, pick with :meth:`select`."""

    def __init__(self) -> None:
        self._backends: dict[str, GemmBackend] = {}

    def register(
        self,
        name: str,
        formats: tuple[WeightFormat, ...],
        priority: int = 0,
        available: AvailableFn = _always,
    ) -> Callable[[GemmFn], GemmFn]:
        """Decorator registering ``fn`` as backend ``name`` for ``formats``."""

        def deco(fn: GemmFn) -> GemmFn:
            if name in self._backends:
                raise ValueError(f"GEMM backend {name!r} is already registered")
            self._backends[name] = GemmBackend(name, frozenset(formats), fn, priority, available)
            return fn

        return deco

    def get(self, name: str) -> GemmBackend:
        """The backend called ``name``; KeyError listing the known names otherwise."""
        try:
            return self._backends[name]
        except KeyError:
            known = sorted(self._backends)
            raise KeyError(f"unknown GEMM backend {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Registered backend names."""
        return sorted(self._backends)

    def candidates(self, x: torch.Tensor, weight: QuantizedWeight) -> list[GemmBackend]:
        """Backends serving ``weight.format`` that can run here, best first."""
        found = [
            b
            for b in self._backends.values()
            if weight.format in b.formats and b.available(x, weight)
        ]
        return sorted(found, key=lambda b: -b.priority)

    def select(self, x: torch.Tensor, weight: QuantizedWeight) -> GemmBackend:
        """The best available backend for these operands (RuntimeError if none)."""
        found = self.candidates(x, weight)
        if not found:
            raise RuntimeError(
                f"no GEMM backend for weight format {weight.format.value!r} on {x.device}"
            )
        return found[0]


#: The process-wide registry the backend modules register into.
GEMM_BACKENDS = GemmBackendRegistry()


def quantized_linear(
    x: torch.Tensor,
    weight: QuantizedWeight,
    bias: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """``x @ dequant(weight).T + bias`` through the best (or the named) GEMM backend.

    Args:
        x: activations ``[..., K]`` (bf16/fp16/fp32).
        weight: a quantized ``[N, K]`` weight (:mod:`.weights`).
        bias: optional ``[N]``.
        backend: force a backend by name (it must serve the format and be available).

    Returns:
        ``[..., N]`` in ``x.dtype``.
    """
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} input features, weight expects {weight.shape[1]}")
    if backend is None:
        chosen = GEMM_BACKENDS.select(x, weight)
    else:
        chosen = GEMM_BACKENDS.get(backend)
        if weight.format not in chosen.formats or not chosen.available(x, weight):
            raise ValueError(
                f"backend {backend!r} cannot run format {weight.format.value!r} on {x.device}"
            )
    lead = x.shape[:-1]
    y = chosen.fn(x.reshape(-1, x.shape[-1]), weight, bias)
    return y.reshape(*lead, weight.shape[0])
