"""``MaxCalibrator``: running absolute maximum per tensor, per channel or per block."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..formats.base import check_input
from .base import Calibrator, check_finite, granularity_for

__all__ = ["MaxCalibrator"]


class MaxCalibrator(Calibrator):
    """Keeps the running ``max(|x|)`` in the amax shape of the quantizer.

    Args:
        num_bits: bits of the quantizer (informational).
        axis: keep these dims (per-channel amax, e.g. ``[out, 1]`` for ``axis=0``).
        unsigned: unsigned quantization (informational).
        block_sizes: per-block amax (``[num_blocks, 1]``), see :class:`Blocked`.
    """

    def __init__(
        self,
        num_bits: int | tuple[int, int] = 8,
        axis: int | tuple[int, ...] | None = None,
        unsigned: bool = False,
        block_sizes: Mapping[int, int | None] | None = None,
    ) -> None:
        super().__init__(num_bits, axis, unsigned)
        self._granularity = granularity_for(axis, block_sizes)
        self._amax: torch.Tensor | None = None

    def collect(self, x: torch.Tensor) -> None:
        """Update the running max with batch ``x`` (NaN/Inf raise ``ValueError``).

        On CUDA the NaN/Inf check is deferred to :meth:`compute_amax`: a per-batch check
        would copy a flag to the host for every quantizer and batch, stalling the launch queue
        (calibration then ran ~3x a plain forward). NaN and Inf propagate through the running
        max, so checking the result once finds them all.
        """
        on_cuda = isinstance(x, torch.Tensor) and x.is_cuda
        if on_cuda:
            check_input(x, "x")
            x = x.detach()
        else:
            x = self._check(x)
        if x.numel() == 0:
            return  # an empty batch carries no statistics
        view, _ = self._granularity.to_view(x)
        amax = self._granularity.reduce_amax(view)
        if not on_cuda:  # on CUDA: once, in compute_amax (see above)
            self._check_reduced(amax, x)  # before any state changes
        if self._amax is None:
            self._amax = amax
            return
        if amax.shape != self._amax.shape:
            raise ValueError(
                f"MaxCalibrator.collect: x of shape {tuple(x.shape)} gives amax shape "
                f"{tuple(amax.shape)}, but earlier batches gave {tuple(self._amax.shape)}"
            )
        self._amax = torch.maximum(self._amax, amax)

    def reset(self) -> None:  # noqa: D102
        self._amax = None

    def compute_amax(self, method: str | None = None) -> torch.Tensor | None:  # type: ignore[override]
        """The running max (float32, amax shape), or ``None`` before any ``collect``."""
        if method not in (None, "max"):
            raise ValueError(f"method: MaxCalibrator only computes 'max', got {method!r}")
        if self._amax is not None and self._amax.is_cuda:
            check_finite(self._amax, "MaxCalibrator")  # the deferred check of collect()
        return self._amax
