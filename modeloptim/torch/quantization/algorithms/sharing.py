"""Weight-layout helpers and producer folding for scale-migrating algorithms.

Which layers read the same tensor is found by the trace module
(:func:`modeloptim.torch.trace.shared_input_groups`); this module keeps what the
algorithms do with a group: read/write a linear weight as ``[out, in]``
(:data:`LINEAR_LAYOUTS`, :func:`get_weight_2d`, :func:`set_weight_2d`) and fold an input
scale into the group's producer (:func:`fold_scale_into_producer`). The runtime finder and
``SharedInputGroup`` moved to the trace package and are re-exported here for compatibility.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from modeloptim.torch.trace.linear_layouts import (
    LINEAR_LAYOUTS,
    get_weight_2d,
    register_hf_conv1d,
    set_weight_2d,
)
from modeloptim.torch.trace.runtime_readers import find_shared_input_groups, run_one_forward
from modeloptim.torch.trace.shared_group import SharedInputGroup

__all__ = [
    "LINEAR_LAYOUTS",
    "SharedInputGroup",
    "find_shared_input_groups",
    "fold_scale_into_producer",
    "get_weight_2d",
    "run_one_forward",
    "set_weight_2d",
]

_register_hf_conv1d = register_hf_conv1d  # old private name, imported by quant_utils


@torch.no_grad()
def fold_scale_into_producer(
    group: SharedInputGroup, inv_scale: torch.Tensor, probe: torch.Tensor | None = None
) -> bool:
    """Multiply the producer's output channels by ``inv_scale`` in its parameters, if exact.

    Supported producers: modules whose output is proportional per channel to a 1-D ``weight``
    (LayerNorm, RMSNorm of any library; plus a 1-D ``bias``) and linear layers (output rows).
    The fold is checked on ``probe`` (an input of the producer) when given: if the new output
    is not ``old * inv_scale`` (rtol 1e-5), it is undone.

    Args:
        group: a group with ``foldable`` True.
        inv_scale: ``[C]`` factor per output channel of the producer.
        probe: a sample input of the producer for the exactness check.

    Returns:
        True when folded; False (nothing changed) otherwise.
    """
    prod = group.producer_module
    if prod is None or not group.exclusive:
        return False
    probe = probe if probe is not None else group.probe
    params = _scalable_params(prod, inv_scale.numel())
    if not params:
        return False
    before = prod(probe) if probe is not None else None
    saved = [p.detach().clone() for p in params]
    for p in params:
        shape = [-1] + [1] * (p.dim() - 1)
        p.mul_(inv_scale.to(device=p.device, dtype=p.dtype).reshape(shape))
    if before is not None and isinstance(before, torch.Tensor):
        after = prod(probe)
        expect = before * inv_scale.to(device=before.device, dtype=before.dtype)
        if not torch.allclose(after, expect, rtol=1e-5, atol=1e-6 * float(expect.abs().max())):
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
            return False
    return True


def _scalable_params(module: nn.Module, channels: int) -> list[torch.Tensor]:
    """Parameters to scale so that output channel ``c`` is multiplied by ``inv_scale[c]``."""
    if LINEAR_LAYOUTS.lookup(module) is not None:
        w = get_weight_2d(module)
        if w.shape[0] != channels:
            return []
        out: list[torch.Tensor] = [w]
        bias: Any = getattr(module, "bias", None)
        if bias is not None:
            out.append(bias.data)
        return out
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or weight.numel() != channels:
        return []
    bias = getattr(module, "bias", None)
    params: list[torch.Tensor] = [weight.data]
    if isinstance(bias, torch.Tensor):
        if bias.dim() != 1 or bias.numel() != channels:
            return []
        params.append(bias.data)
    return params


def layers_in(groups: Iterable[SharedInputGroup]) -> list[str]:
    """All member layer names of ``groups``."""
    return [n for g in groups for n in g.names]
