"""Helpers the calibration algorithms share.

Find quantized linear layers, run the model in full precision, fake-quantize a candidate
weight with a freshly calibrated amax, and give a weight-only layer a pre-quantization scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..nn import SequentialQuantizer, TensorQuantizer
from .sharing import LINEAR_LAYOUTS, _register_hf_conv1d

__all__ = [
    "discover_groups",
    "enable_pre_quant_scale",
    "full_precision",
    "is_quant_linear",
    "leaf_quantizers",
    "qdq_fresh",
    "qdq_with_amax",
    "quant_linear_layers",
    "restore_scale_only",
    "weight_block_size",
]


def leaf_quantizers(q: Any) -> list[TensorQuantizer]:
    """The TensorQuantizers of a quantizer attribute (one, or a SequentialQuantizer's)."""
    if isinstance(q, SequentialQuantizer):
        return q.quantizers()
    return [q] if isinstance(q, TensorQuantizer) else []


def is_quant_linear(module: nn.Module) -> bool:
    """A quantized linear-like layer with an enabled weight quantizer."""
    wq = getattr(module, "weight_quantizer", None)
    if not isinstance(getattr(module, "input_quantizer", None), TensorQuantizer):
        return False
    if not any(q.is_enabled for q in leaf_quantizers(wq)):
        return False
    _register_hf_conv1d()
    return LINEAR_LAYOUTS.lookup(module) is not None


def quant_linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> layer for every :func:`is_quant_linear` layer, in module order."""
    return {n: m for n, m in model.named_modules() if is_quant_linear(m)}


@contextmanager
def full_precision(model: nn.Module) -> Iterator[None]:
    """Within the context every quantizer is disabled (forward is the float model)."""
    qs = [m for m in model.modules() if isinstance(m, TensorQuantizer) and m.is_enabled]
    for q in qs:
        q.disable()
    try:
        yield
    finally:
        for q in qs:
            q.enable()


def _stage_amax(q: TensorQuantizer, x: torch.Tensor) -> torch.Tensor | None:
    return q.format.compute_amax(x) if q.format.amax_granularity is not None else None


@torch.no_grad()
def qdq_fresh(quantizer: Any, w: torch.Tensor) -> torch.Tensor:
    """Fake-quantize ``w`` as ``quantizer`` would after max calibration on ``w`` itself.

    The quantizer is not modified. For a SequentialQuantizer every stage is calibrated on
    ``w`` (as max calibration does) and the stages are applied in order.
    """
    out = w
    for q in leaf_quantizers(quantizer):
        if q.is_enabled:
            out = q.format.fake_quant(out, _stage_amax(q, w))
    return out


@torch.no_grad()
def qdq_with_amax(quantizer: TensorQuantizer, x: torch.Tensor, amax: torch.Tensor | None) -> Any:
    """Fake-quantize ``x`` with ``quantizer``'s format and the given amax (no pre-scale)."""
    if not quantizer.is_enabled:
        return x
    fmt = quantizer.format
    if fmt.amax_granularity is None:
        return fmt.fake_quant(x, None)
    if amax is None:
        amax = fmt.compute_amax(x)
    return fmt.fake_quant(x, amax)


def enable_pre_quant_scale(quantizer: TensorQuantizer, scale: torch.Tensor) -> None:
    """Set ``pre_quant_scale``; a disabled quantizer is switched to scale-only (no quant).

    A disabled TensorQuantizer returns its input untouched, so a weight-only layer's input
    quantizer is enabled with quantization and calibration off: it then only multiplies by
    the scale (ModelOpt does the same for AWQ on weight-only formats).
    """
    if not quantizer.is_enabled:
        quantizer.enable()
        quantizer.disable_quant()
        quantizer.disable_calib()
        quantizer.__dict__["_scale_only"] = True
    quantizer.pre_quant_scale = scale


def restore_scale_only(model: nn.Module) -> None:
    """Re-apply the scale-only state after a calibration pass switched quantization on."""
    for m in model.modules():
        if isinstance(m, TensorQuantizer) and getattr(m, "_scale_only", False):
            m.disable_quant()
            m.disable_calib()
            m.reset_amax()


def discover_groups(model: nn.Module, forward_loop: Any) -> list[Any]:
    """Shared-input groups of the quantized linear layers, from the model's fx graphs.

    See :func:`modeloptim.torch.trace.shared_input_groups` (the first call of
    ``forward_loop`` is captured and traced in full precision; untraceable parts fall back
    to the runtime finder).
    """
    from modeloptim.torch.trace.shared_inputs import shared_input_groups

    layers = set(quant_linear_layers(model).values())  # before quantizers are switched off
    with full_precision(model):
        return shared_input_groups(
            model, forward_loop=forward_loop, predicate=lambda _n, m: m in layers
        )


def weight_block_size(quantizer: Any) -> int | None:
    """Block length along the input dim of the (first enabled) weight quantizer, if blocked."""
    from ..formats.granularity import Blocked

    for q in leaf_quantizers(quantizer):
        g = q.format.granularity
        if q.is_enabled and isinstance(g, Blocked) and set(g.block_sizes) == {-1}:
            size = g.block_sizes[-1]
            return int(size) if size is not None else None
    return None
