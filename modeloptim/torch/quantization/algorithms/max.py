"""Algorithm ``"max"``: amax from the calibrators of every enabled static quantizer.

Steps (as in ModelOpt): weights are calibrated from the stored weights directly; then the
forward loop runs the model in full precision (every quantizer paused) while the activation
quantizers collect statistics; finally each quantizer loads its amax (max, or the histogram
method its calibrator was configured with) and quantization is switched back on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from modeloptim.torch.quantization.algorithms.registry import (
    AlgorithmConfig,
    ForwardLoop,
    calibration_algorithms,
)

if TYPE_CHECKING:
    from modeloptim.torch.quantization.nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["MaxCalibConfig", "calibrate_with", "max_calibrate", "run_forward_loop"]


class MaxCalibConfig(AlgorithmConfig):
    """``algorithm="max"`` (no options)."""

    method: Literal["max"] = "max"


def _enabled(model: nn.Module) -> list[TensorQuantizer]:
    # Imported here: the config module imports this registry, and conversion imports config.
    from modeloptim.torch.quantization.conversion import named_tensor_quantizers

    return [q for _, q in named_tensor_quantizers(model) if q.is_enabled]


def run_forward_loop(model: nn.Module, forward_loop: ForwardLoop, desc: str) -> None:
    """Run ``forward_loop(model)`` under ``no_grad`` with a tqdm counter of model calls."""
    with tqdm(desc=desc, unit="batch", leave=False) as bar:

        def count(*_: Any) -> None:
            # A forward hook's return value replaces the output: never return tqdm's bool.
            bar.update(1)

        handle = model.register_forward_hook(count)
        try:
            with torch.no_grad():
                forward_loop(model)
        finally:
            handle.remove()


@torch.no_grad()
def _calibrate_weights(model: nn.Module) -> None:
    from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule

    layers = [m for m in model.modules() if isinstance(m, QuantModule)]
    for layer in tqdm(layers, desc="calibrate weights", unit="layer", leave=False):
        for quantizer, weight in layer.weight_quantizer_pairs():
            quantizer(weight)


def calibrate_with(
    model: nn.Module,
    forward_loop: ForwardLoop | None,
    desc: str,
    load_amax: Callable[[TensorQuantizer], None],
) -> None:
    """Shared calibration flow: collect from weights and the loop, then ``load_amax(q)``.

    Every enabled quantizer is paused during collection (the loop runs in full precision);
    weights are collected from the stored weights, activations from ``forward_loop``.
    """
    from modeloptim.torch.quantization.model_quant import weight_quantizer_ids

    enabled = _enabled(model)
    quantizers = [q for q in enabled if q._calibrator is not None]
    weight_quantizers = weight_quantizer_ids(model)
    for q in enabled:
        q.disable_quant()
    for q in quantizers:
        q.reset_amax()
        q.enable_calib()
    try:
        _calibrate_weights(model)
        for q in quantizers:
            if id(q) in weight_quantizers:
                q.disable_calib()  # collected from the weights already; skip in the loop
        # Only activation quantizers learn from the loop: weight-only configs skip it.
        if forward_loop is not None and any(id(q) not in weight_quantizers for q in quantizers):
            run_forward_loop(model, forward_loop, desc)
        # Data-parallel calibration: combine the ranks' statistics (no-op without a group).
        from modeloptim.torch.quantization.algorithms.distributed import sync_quantizer_stats

        sync_quantizer_stats(model)
        for q in quantizers:
            load_amax(q)
    finally:
        for q in enabled:
            q.disable_calib()
            q.enable_quant()


@calibration_algorithms.register("max", MaxCalibConfig)
def max_calibrate(
    model: nn.Module, forward_loop: ForwardLoop | None, config: object = None
) -> None:
    """Max calibration of every enabled quantizer that has a calibrator.

    Args:
        model: a converted (quantized) model.
        forward_loop: runs calibration data through ``model``; ``None`` calibrates weights
            only (activation quantizers that need an amax then keep none).
        config: :class:`MaxCalibConfig` (unused).
    """
    calibrate_with(
        model, forward_loop, "calibrate (max)", lambda q: q.load_calib_amax(strict=False)
    )
