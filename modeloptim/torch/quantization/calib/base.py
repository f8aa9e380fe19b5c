"""Calibrator base class: accumulates statistics over batches, then proposes an amax."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from ..formats.base import check_input
from ..formats.granularity import Blocked, Granularity, PerChannel, PerTensor

__all__ = ["Calibrator", "check_finite", "check_finite_reduced", "granularity_for"]


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


def check_finite_reduced(reduced: torch.Tensor, x: torch.Tensor, owner: str) -> None:
    """Raise ``ValueError`` if ``x`` held NaN/Inf, judged from ``reduced = max(|x|)``.

    A max reduction propagates NaN and Inf, so checking the (small) reduced tensor finds
    every bad input without a full pass of ``isfinite`` over ``x`` (that pass cost about two
    thirds of weight calibration). Only on failure is ``x`` itself inspected, to tell NaN/Inf
    apart from finite values beyond the float32 range of the amax.

    Args:
        reduced: any max of ``|x|`` (amax shape, float32).
        x: the batch it was reduced from (any shape).
        owner: the calibrator's name for the message.

    Raises:
        ValueError: ``x`` holds NaN/Inf, or values too large for a float32 amax.
    """
    if bool(torch.isfinite(reduced).all()):
        return
    check_finite(x, owner)
    raise ValueError(
        f"{owner}.collect: input x has values beyond the float32 range "
        f"(max |x| = {float(x.detach().abs().max()):.4g}); the amax is kept in float32"
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
        # Finiteness is checked on the reduction (see `check_finite_reduced`), not here.
        check_input(x, "x")
        return x.detach()

    def _check_reduced(self, reduced: torch.Tensor, x: torch.Tensor) -> None:
        check_finite_reduced(reduced, x, type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_bits={self._num_bits!r}, axis={self._axis!r})"
