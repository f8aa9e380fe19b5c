"""Algorithms ``percentile``, ``entropy`` and ``mse``: histogram calibration of activations.

Each enabled static per-tensor *activation* quantizer collects a histogram of ``|x|`` over the
forward loop (weights keep max calibration: their full range is known exactly and per-channel
or block amax has no histogram), then its amax is chosen by the method:

- ``percentile``: the ``percentile``-th percentile of ``|x|``;
- ``entropy``: the TensorRT KL-divergence threshold search;
- ``mse``: the amax minimizing the quantization MSE over the histogram.

The same choice is available per quantizer in a config, without changing the algorithm:
``{"calibrator": {"method": "histogram", "amax_method": "entropy"}}`` in a ``quant_cfg``
entry (then ``algorithm="max"`` loads each quantizer's own choice). Statistics are merged
across ranks under torch.distributed (histograms re-binned to the common range and summed).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import nn

from ..calib import HistogramCalibrator
from ..formats.granularity import PerTensor
from ..nn import TensorQuantizer
from .registry import AlgorithmConfig, ForwardLoop, calibration_algorithms

__all__ = ["EntropyCalibConfig", "MseCalibConfig", "PercentileCalibConfig", "histogram_calibrate"]


class _HistBase(AlgorithmConfig):
    num_bins: int = Field(default=2048, ge=16)
    skip_zeros: bool = False


class PercentileCalibConfig(_HistBase):
    """``percentile`` options."""

    method: Literal["percentile"] = "percentile"
    percentile: float = Field(default=99.99, gt=0.0, le=100.0)


class EntropyCalibConfig(_HistBase):
    """``entropy`` options."""

    method: Literal["entropy"] = "entropy"
    start_bin: int = Field(default=128, ge=1)
    stride: int = Field(default=1, ge=1)


class MseCalibConfig(_HistBase):
    """``mse`` options."""

    method: Literal["mse"] = "mse"
    start_bin: int = Field(default=128, ge=1)
    stride: int = Field(default=1, ge=1)


class _MethodHistogram(HistogramCalibrator):
    """A histogram calibrator whose default ``compute_amax`` uses a fixed method."""

    def __init__(self, method: str, amax_kwargs: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._method = method
        self._amax_kwargs = amax_kwargs

    def compute_amax(self, method: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.pop("method", None)
        return super().compute_amax(method or self._method, **{**self._amax_kwargs, **kwargs})


def _activation_quantizers(model: nn.Module) -> list[TensorQuantizer]:
    from ..model_quant import weight_quantizer_ids

    weights = weight_quantizer_ids(model)
    return [
        q
        for q in model.modules()
        if isinstance(q, TensorQuantizer)
        and q.is_enabled
        and id(q) not in weights
        and isinstance(q.format.amax_granularity, PerTensor)
    ]


def histogram_calibrate(model: nn.Module, forward_loop: ForwardLoop | None, config: Any) -> None:
    """Histogram calibration of activation quantizers with ``config.method``; max for the rest."""
    from .max import max_calibrate

    if forward_loop is None:
        raise ValueError(f"forward_loop: algorithm {config.method!r} needs calibration data")
    opts = {
        k: getattr(config, k) for k in ("percentile", "start_bin", "stride") if hasattr(config, k)
    }
    swapped = []
    for q in _activation_quantizers(model):
        cfg = q.quant_attribute_cfg
        num_bits = cfg.num_bits if not isinstance(cfg.num_bits, str) else 8
        swapped.append((q, q._calibrator))
        q._calibrator = _MethodHistogram(
            config.method,
            opts,
            num_bits=num_bits,
            unsigned=cfg.unsigned,
            num_bins=config.num_bins,
            skip_zeros=config.skip_zeros,
            narrow_range=cfg.narrow_range,
        )
    try:
        max_calibrate(model, forward_loop, None)
    finally:
        for q, cal in swapped:
            q._calibrator = cal


for _name, _cls in (
    ("percentile", PercentileCalibConfig),
    ("entropy", EntropyCalibConfig),
    ("mse", MseCalibConfig),
):
    calibration_algorithms.register(_name, _cls, needs_forward_loop=True)(histogram_calibrate)
