"""Algorithms ``"percentile"``, ``"entropy"``, ``"mse"``: histogram calibration of activations.

Per-tensor static activation quantizers collect a histogram of ``|x|`` over the forward loop
and take the amax the method picks (core ``HistogramCalibrator``); weights and per-channel or
block quantizers use max calibration, as in TensorRT-style PTQ. Each quantizer's configured
calibrator is restored afterwards (the chosen amax stays). Note: ModelOpt's ``"mse"``
algorithm searches weight amax; here ``"mse"`` is the histogram MSE method on activations.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from modeloptim.torch.quantization.algorithms.max import calibrate_with
from modeloptim.torch.quantization.algorithms.registry import (
    AlgorithmConfig,
    ForwardLoop,
    calibration_algorithms,
)

__all__ = ["HistogramCalibConfig", "histogram_calibrate"]


class HistogramCalibConfig(AlgorithmConfig):
    """Options of the histogram methods.

    ``percentile`` uses ``percentile``; ``entropy`` and ``mse`` use ``start_bin``/``stride``.
    """

    method: Literal["percentile", "entropy", "mse"]
    percentile: float = Field(99.99, gt=0.0, le=100.0)
    num_bins: int = Field(2048, ge=2)
    skip_zeros: bool = False
    start_bin: int = Field(128, ge=1)
    stride: int = Field(1, ge=1)


def histogram_calibrate(
    model: nn.Module, forward_loop: ForwardLoop | None, config: HistogramCalibConfig
) -> None:
    """Calibrate activations with ``config.method`` over histograms, weights with max."""
    from modeloptim.torch.quantization.conversion import named_tensor_quantizers
    from modeloptim.torch.quantization.model_quant import weight_quantizer_ids

    weights = weight_quantizer_ids(model)
    targets = [
        q
        for _, q in named_tensor_quantizers(model)
        if q.is_enabled
        and q._calibrator is not None
        and id(q) not in weights
        and q.axis is None
        and not q.block_sizes
    ]
    saved = [(q, q.quant_attribute_cfg.calibrator) for q in targets]
    histogram = {
        "method": "histogram",
        "num_bins": config.num_bins,
        "skip_zeros": config.skip_zeros,
    }
    options = (
        {"percentile": config.percentile}
        if config.method == "percentile"
        else {"start_bin": config.start_bin, "stride": config.stride}
    )
    target_ids = {id(q) for q in targets}
    try:
        for q in targets:
            q.set_from_attribute_config({"calibrator": histogram})

        def load(q: nn.Module) -> None:
            if id(q) in target_ids:
                q.load_calib_amax(config.method, strict=False, **options)  # type: ignore[operator]
            else:
                q.load_calib_amax(strict=False)  # type: ignore[operator]

        calibrate_with(model, forward_loop, f"calibrate ({config.method})", load)
    finally:
        for q, calibrator in saved:
            q.set_from_attribute_config({"calibrator": calibrator})


for _name in ("percentile", "entropy", "mse"):
    calibration_algorithms.register(_name, HistogramCalibConfig, needs_forward_loop=True)(
        histogram_calibrate  # type: ignore[arg-type]
    )
