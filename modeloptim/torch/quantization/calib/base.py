"""Calibrator base class: accumulates statistics over batches, then proposes an amax."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from ..formats.base import check_input
from ..formats.granularity import Blocked, Granularity, PerChannel, PerTensor

__all__ = ["Calibrator", "check_finite", "granularity_for"]


def granularity_for(
    axis: int | tuple[int, ...] | None, block_sizes: Mapping[int, int | None] | None
) -> Granularity:
    """Granularity of the amax a calibrator collects (per tensor / channel / block)."""
    if axis is not None and block_sizes:
        raise ValueError("axis and block_sizes: set one of them, not both")
    if block_sizes:
        return Blocked({k: v for k, v in block_sizes.items() if isinstance(k, int)})
    if axis is not None:
        return PerChannel(axis)
    return PerTensor()


def check_finite(x: torch.Tensor, owner: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN/Inf (it would poison the amax silently)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{owner}.collect: input x contains NaN or Inf values; calibration data must be "
            "finite (check the model's activations or filter these batches)"
        )


class Calibrator(ABC):
    """Common calibrator API: ``collect(x)`` per batch, ``compute_amax()``, ``reset()``.

    Args:
        num_bits: bits (int) or ``(E, M)`` of the quantizer being calibrated.
        axis: per-channel axis, or ``None``.
        unsigned: unsigned integer quantization.
    """

    def __init__(
        self,
        num_bits: int | tuple[int, int] = 8,
        axis: int | tuple[int, ...] | None = None,
        unsigned: bool = False,
    ) -> None:
        self._num_bits = num_bits
        self._axis = axis
        self._unsigned = unsigned

    @abstractmethod
    def collect(self, x: torch.Tensor) -> None:
        """Accumulate the statistics of one batch ``x`` (any shape); ``x`` is not kept."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything collected."""

    @abstractmethod
    def compute_amax(self, *args: Any, **kwargs: Any) -> torch.Tensor | None:
        """The amax (float32) chosen from the collected statistics, ``None`` if nothing."""

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "x")
        check_finite(x, type(self).__name__)
        return x.detach()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_bits={self._num_bits!r}, axis={self._axis!r})"
