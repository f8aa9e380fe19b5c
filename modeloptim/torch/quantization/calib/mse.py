"""MSE amax search: the threshold that minimizes the histogram-weighted quantization error."""

from __future__ import annotations

import numpy as np
import torch

from ..formats.base import QuantFormat
from ..formats.fp8 import FP8_SPECS, FP8Format
from ..formats.granularity import PerChannel
from ..formats.integer import IntegerFormat

__all__ = ["mse_amax", "row_format"]


def row_format(num_bits: int | tuple[int, int], unsigned: bool, narrow_range: bool) -> QuantFormat:
    """Element format with one amax per row (used to score many candidates at once)."""
    if isinstance(num_bits, int):
        return IntegerFormat(num_bits, unsigned, narrow_range, PerChannel(0))
    if tuple(num_bits) in ((4, 3), (5, 2)) and num_bits[0] in FP8_SPECS:
        return FP8Format(num_bits[0], PerChannel(0))
    raise ValueError(
        f"num_bits: method='mse' supports integer and FP8 quantizers, got {num_bits!r}"
    )


def mse_amax(
    hist: np.ndarray,
    edges: np.ndarray,
    num_bits: int | tuple[int, int] = 8,
    unsigned: bool = False,
    narrow_range: bool = True,
    start_bin: int = 128,
    stride: int = 1,
) -> float:
    """The amax in ``edges[start_bin::stride]`` minimizing ``sum(hist * (fq(c) - c)**2)``.

    ``c`` are the bin centers; ``fq`` is the quantizer's own fake quantization (float32),
    so the score is the expected squared error of the real format, clipping included.
    """
    if stride < 1:
        raise ValueError(f"stride: expected >= 1, got {stride!r}")
    fmt = row_format(num_bits, unsigned, narrow_range)
    n = len(hist)
    cand = np.arange(max(1, min(start_bin, n)), n + 1, stride)
    centers = torch.from_numpy((edges[:-1] + edges[1:]) / 2).float()
    weights = torch.from_numpy(hist)
    best_amax, best_err = float(edges[-1]), float("inf")
    for chunk in np.array_split(cand, max(1, len(cand) // 256)):
        amax = torch.from_numpy(edges[chunk]).float().reshape(-1, 1)
        fq = fmt.fake_quant(centers.expand(len(chunk), -1), amax)
        err = (((fq - centers).double() ** 2) * weights).sum(dim=1)
        k = int(torch.argmin(err))
        if float(err[k]) < best_err:
            best_amax, best_err = float(edges[chunk[k]]), float(err[k])
    return best_amax
