"""Fused-layer consistency: one input scale (and one ``pre_quant_scale``) per shared input.

Serving engines fuse layers that read the same tensor (q/k/v, gate/up) into one GEMM with a
single activation scale. Groups are the trace module's
(:func:`modeloptim.torch.trace.shared_input_groups`: layers reading one value of the fx
graph, not matched by module names), the same groups SmoothQuant/AWQ calibrate with.

:func:`harmonize_groups` then, per group of two or more layers with input quantizers:

- ``pre_quant_scale``: if the members differ, all get the mean ``s`` and each weight is
  re-smoothed, ``W_i[:, j] *= s_i[j] / s[j]``, so ``(x * s) @ W_i'^T == (x * s_i) @ W_i^T`` before
  quantization; static weight amaxes are re-calibrated on the new weights;
- input ``amax``: the maximum of the members' amaxes.

This changes the fake-quantized model slightly (it is what the fused kernels compute); the
export is written from the harmonized model, so model and checkpoint agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modeloptim.torch.export.layers import layer_export
from modeloptim.torch.export.packers import leaf_quantizers
from modeloptim.torch.quantization.nn import TensorQuantizer
from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule

__all__ = ["find_shared_input_groups", "harmonize_groups"]


def _is_candidate(module: nn.Module) -> bool:
    return isinstance(module, QuantModule) and module._parameters.get("weight") is not None


def find_shared_input_groups(model: nn.Module, run: Callable[[nn.Module], Any]) -> list[list[str]]:
    """Names of quantized layers grouped by the tensor they read (the trace module's groups).

    A thin view of :func:`modeloptim.torch.trace.shared_input_groups` (graph-based, with a
    runtime fallback for untraceable parts) over the quantized layers, run in full precision:
    quantization does not change which tensor a layer reads.

    Args:
        model: a quantized model.
        run: ``run(model)`` performs one forward pass (its first model call is traced).

    Returns:
        Groups in first-call order (singletons included); layers that never ran are omitted.
        A layer called on several tensors joins one group with all their readers.
    """
    from modeloptim.torch.trace.shared_inputs import shared_input_groups

    quantizers = [m for m in model.modules() if isinstance(m, TensorQuantizer) and m.is_enabled]
    for q in quantizers:
        q.disable()
    try:
        groups = shared_input_groups(
            model, forward_loop=run, predicate=lambda _n, m: _is_candidate(m)
        )
    finally:
        for q in quantizers:
            q.enable()
    return [g.names for g in groups]


def _stored_weight(module: nn.Module) -> torch.Tensor | None:
    """The layer's float weight: its parameter, or the view a ``weight`` property gives."""
    w: torch.Tensor | None = module._parameters.get("weight")
    if w is None and isinstance(getattr(type(module), "weight", None), property):
        view: Any = module.weight  # 3-D MoE experts: a slice of the owner's parameter
        w = view.detach()
    return w


def _recalibrate_weight(module: nn.Module) -> None:
    w = _stored_weight(module)
    assert w is not None
    x = w.detach()
    for q in leaf_quantizers(module._modules.get("weight_quantizer")):
        if not q.is_enabled:
            continue
        if not q.format.is_dynamic:
            amax = q.format.compute_amax(x)
            if amax is not None:
                q.amax = amax.reshape(q.amax.shape) if q.amax is not None else amax
        x = q(x)


def _unify_pre_quant_scale(
    names: list[str], mods: list[nn.Module], qs: list[TensorQuantizer]
) -> bool:
    scales = [q.pre_quant_scale for q in qs]
    first = next((s for s in scales if s is not None), None)
    if first is None:
        return False
    full = [torch.ones_like(first) if s is None else s.float().reshape(-1) for s in scales]
    if all(torch.equal(full[0], s) for s in full[1:]):
        return False
    weights = [_stored_weight(m) for m in mods]
    if any(w is None for w in weights):
        raise ValueError(
            f"model: layers {names} read one tensor with different pre_quant_scale but are "
            "compressed; export before mtq.compress so their weights can be re-smoothed"
        )
    mean = torch.stack(full).mean(dim=0)
    for m, q, s, w in zip(mods, qs, full, weights, strict=True):
        assert w is not None
        w.mul_((s / mean).to(w.dtype))
        q.pre_quant_scale = mean
        _recalibrate_weight(m)
    return True


@torch.no_grad()
def harmonize_groups(model: nn.Module, groups: list[list[str]]) -> list[list[str]]:
    """Give every fused group one input amax and one ``pre_quant_scale`` (in place).

    Returns:
        The groups that were changed.
    """
    changed: list[list[str]] = []
    for names in groups:
        if len(names) < 2:
            continue
        members = [(n, model.get_submodule(n)) for n in names]
        inqs = [m._modules.get("input_quantizer") for _, m in members]
        # Members whose input is not quantized (e.g. a float gate next to MoE experts) are
        # left as they are; the others still need one scale for their fused kernel.
        kept = [
            (n, m, q)
            for (n, m), q in zip(members, inqs, strict=True)
            if isinstance(q, TensorQuantizer) and q.is_enabled
        ]
        if len(kept) < 2:
            continue
        names = [n for n, _, _ in kept]
        mods = [m for _, m, _ in kept]
        qs = [q for _, _, q in kept]
        # Layers exported in float keep their own smoothing (folded into their float weight
        # by the export): only the quantized members share the fused kernel's factors.
        quant = [
            i
            for i, (n, m) in enumerate(zip(names, mods, strict=True))
            if layer_export(n, m) is not None
        ]
        touched = _unify_pre_quant_scale(
            [names[i] for i in quant], [mods[i] for i in quant], [qs[i] for i in quant]
        )
        amaxes = [q.amax for q in qs]
        present = [a for a in amaxes if a is not None]
        if len(present) == len(qs):
            top = torch.stack([a.float() for a in present]).amax(dim=0)
            if not all(torch.equal(a, top) for a in present):
                for q in qs:
                    q.amax = top
                touched = True
        if touched:
            changed.append(names)
    return changed
