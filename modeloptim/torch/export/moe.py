"""Checkpoint form of transformers-5 3-D MoE experts: one unfused layer per expert projection.

transformers 5.x keeps a MoE layer's experts as 3-D parameters (``experts.gate_up_proj``
``[E, 2*I, H]``, ``experts.down_proj`` ``[E, H, I]``); quantized, each expert projection is a
:class:`~modeloptim.torch.quantization.plugins.hf_moe.QuantHFExpertProjection`. Serving
engines read MoE checkpoints with one set of tensors per expert and projection, under the
names of the original Hugging Face checkpoints (which transformers 5 also fuses on load)::

    model.layers.0.mlp.experts.3.gate_proj.weight / weight_scale / input_scale / ...
    model.layers.0.mlp.experts.3.up_proj.*
    model.layers.0.mlp.experts.3.down_proj.*

(vLLM's and TensorRT-LLM's ModelOpt MoE loaders map ``experts.<e>.gate_proj/up_proj`` to
their fused ``w13`` and ``down_proj`` to ``w2``, taking one input scale per layer; ModelOpt's
own export of transformers-5 experts writes the same unfused names). Export therefore splits
each expert's fused ``gate_up_proj`` into ``gate_proj`` and ``up_proj`` rows (the halves, or
even/odd rows for interleaved experts such as GPT-OSS) that share the fused quantizer's
amax, so both halves carry the same ``weight_scale_2``/``input_scale`` as fused kernels need
and the packed weights are bit for bit the fake-quantized ones. Experts whose weight is not
quantized are written in float under the same names and listed in ``exclude_modules``. The
3-D tensors themselves are not written.

Experts of one layer need not be quantized alike; each state either reloads exactly or is
refused before anything is written or changed:

- weight quantizer off, input on (``mtq.disable_quantizer(model,
  "*experts.3.down_proj.weight_quantizer")`` or ModelOpt's ``"*down_proj_weight_quantizers.3"``):
  a float expert part as above; its input amax (still part of the layer's one input scale)
  goes to the loader's sidecar file (:mod:`.float_layers`), and scale-only AWQ smoothing is
  folded into its float weight. A *quantized smoothed* input (SmoothQuant or W4A8 AWQ, then
  the weight disabled) has no float form and is refused.
- the whole expert off: a float expert part, no scales.
- another format for some experts (e.g. one expert's ``down_proj`` in NVFP4, the others in
  FP8): ``MIXED_PRECISION`` with a ``quant_algo`` per expert part; input amaxes are unified
  per input format.
- weight on, input off next to experts of the same ``quant_algo`` whose input has a static
  scale: refused (:func:`collect_export_layers`), since a ModelOpt checkpoint has one input
  scale per projection and layer and the algo name (``FP8``) does not say which experts
  skip it. With distinct algo names (``NVFP4`` next to ``W4A16_NVFP4``) it is exported as
  mixed precision.

:func:`load_expert_layers` is the loader's inverse: it decodes each expert's tensors into the
3-D parameters of a freshly built model (dequantized, so its packed weight stage is switched
off) and restores the input scales.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from modeloptim.torch.export.layers import (
    LayerExport,
    collect_layers,
    format_kind,
    layer_export,
)
from modeloptim.torch.export.packers import UnsupportedFormatError, leaf_quantizers
from modeloptim.torch.export.scales import activation_rule
from modeloptim.torch.quantization.nn import TensorQuantizer
from modeloptim.torch.quantization.plugins.hf_moe import QuantHFMoEExperts

__all__ = [
    "collect_export_layers",
    "expert_base_tensors",
    "expert_modules",
    "expert_parts",
    "load_expert_layers",
    "unify_expert_input_amax",
]


def expert_modules(model: nn.Module) -> list[tuple[str, QuantHFMoEExperts]]:
    """``(name, module)`` of every quantized 3-D experts module of ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantHFMoEExperts)]


def _interleaved(experts: nn.Module) -> bool:
    return getattr(experts, "is_concatenated", True) is False


def expert_parts(experts: QuantHFMoEExperts, proj: str) -> list[tuple[str, torch.Tensor]]:
    """Checkpoint parts of one expert projection: ``(part name, its rows of [out, in])``.

    ``gate_up_proj`` splits into ``gate_proj`` and ``up_proj`` (first/second half of the
    rows, or even/odd rows for interleaved experts); ``up_proj`` and ``down_proj`` stay whole.
    """
    layer: Any = experts.expert(0).get_submodule(proj)
    out = int(layer.out_features)
    every = torch.arange(out)
    if proj != "gate_up_proj":
        return [(proj, every)]
    if _interleaved(experts):
        return [("gate_proj", every[0::2]), ("up_proj", every[1::2])]
    return [("gate_proj", every[: out // 2]), ("up_proj", every[out // 2 :])]


def _slice_rows(quantizer: Any, rows: torch.Tensor, out: int) -> Any:
    """A copy of ``quantizer`` whose amaxes cover only ``rows`` of an ``[out, in]`` weight."""
    sliced = copy.deepcopy(quantizer)
    for q in leaf_quantizers(sliced):
        amax = q.amax
        if amax is None or amax.numel() == 1:
            continue  # per tensor (or dynamic): the same for every row
        if amax.numel() % out:
            raise ValueError(f"weight_quantizer: amax of shape {tuple(amax.shape)} is not per row")
        # per row [out, 1] or per row and block [out * blocks, 1]: rows are the leading dim
        part = amax.reshape(out, -1)[rows.to(amax.device)]
        q.amax = part.reshape(-1, *amax.shape[1:]) if amax.dim() > 1 else part.reshape(-1)
    return sliced


class _PartCarrier(nn.Module):
    """One checkpoint part as a layer: a float ``weight`` and the sliced quantizers."""

    def __init__(self, weight: torch.Tensor, weight_quantizer: Any, input_quantizer: Any) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.weight_quantizer = weight_quantizer
        if input_quantizer is not None:
            self.input_quantizer = input_quantizer


def _part_spec(name: str, spec: LayerExport, rows: torch.Tensor) -> LayerExport:
    """The export description of ``rows`` of the expert projection described by ``spec``."""
    layer: Any = spec.module
    weight = layer.weight.detach()
    wq = _slice_rows(layer._modules["weight_quantizer"], rows, int(weight.shape[0]))
    iq = layer._modules.get("input_quantizer")
    carrier = _PartCarrier(weight[rows.to(weight.device)], wq, iq)
    leaves = leaf_quantizers(wq)
    stages = [q for q in leaves if q.is_enabled]
    return LayerExport(
        name,
        carrier,
        spec.weight_kind,
        spec.input_kind,
        spec.quant_algo,
        spec.group_size,
        stages,
        spec.input_quantizer,
        # a copy each: gate and up parts share the fused input's tensor (safetensors refuses)
        None if spec.pre_quant_scale is None else spec.pre_quant_scale.detach().clone(),
    )


def _check_expert_inputs(name: str, proj: str, specs: dict[int, LayerExport]) -> None:
    """Refuse experts of one projection that share a ``quant_algo`` but not an input scale.

    A ModelOpt checkpoint gives a projection's experts one ``input_scale`` per MoE layer
    (engines take the maximum over experts and apply it to all of them), and the
    ``quant_algo`` name does not say whether an input is quantized (``FP8`` weight-only
    and ``FP8`` reads the same), so experts with a quantized weight and the same algo must
    all have a static input scale or none. Experts whose algos differ are listed one by
    one under ``MIXED_PRECISION`` and are not compared.

    Raises:
        UnsupportedFormatError: the mixed state (names the quantizers and what to change).
    """
    by_algo: dict[str, dict[bool, list[int]]] = {}
    for e, spec in specs.items():
        iq = spec.input_quantizer
        static = iq is not None and activation_rule(iq) is not None
        by_algo.setdefault(spec.quant_algo, {}).setdefault(static, []).append(e)
    for algo, split in by_algo.items():
        if len(split) < 2:
            continue
        off, on = split[False], split[True]
        quantizers = ", ".join(f"'{name}.{e}.{proj}.input_quantizer'" for e in off)
        raise UnsupportedFormatError(
            f"layer {name!r}: {proj} of experts {off} quantizes its weight ({algo}) but not its "
            f"input ({quantizers}), while experts {on} ({algo}) have a static input scale; a "
            "ModelOpt checkpoint has one input scale per projection and MoE layer (engines apply "
            "it to every expert). Enable those input quantizers, or disable the experts' weight "
            "quantizers as well (they are then exported in float). Nothing was written"
        )


def collect_export_layers(model: nn.Module) -> tuple[list[LayerExport], list[str]]:
    """:func:`~.layers.collect_layers` with 3-D experts split into per-expert parts.

    Returns:
        ``(quantized layers, excluded layer names)``: expert projections appear as
        ``<experts>.<e>.gate_proj`` / ``up_proj`` / ``down_proj``; unquantized ones are
        excluded under those names.

    Raises:
        UnsupportedFormatError: experts of one projection mix states that the checkpoint
            cannot express (see :func:`_check_expert_inputs`).
    """
    layers, excluded = collect_layers(model)
    moe = expert_modules(model)
    if not moe:
        return layers, excluded
    children = {
        f"{n}.{e}.{p}"
        for n, m in moe
        for e in range(int(m.num_experts))
        for p in (m.__dict__["_first_proj"], "down_proj")
    }
    by_name = {s.name: s for s in layers}
    for name, experts in moe:  # every check before any part is built
        for proj in (experts.__dict__["_first_proj"], "down_proj"):
            specs = {
                e: by_name[f"{name}.{e}.{proj}"]
                for e in range(int(experts.num_experts))
                if f"{name}.{e}.{proj}" in by_name
            }
            _check_expert_inputs(name, proj, specs)
    out = [s for s in layers if s.name not in children]
    for name, experts in moe:
        for e in range(int(experts.num_experts)):
            for proj in (experts.__dict__["_first_proj"], "down_proj"):
                spec = by_name.get(f"{name}.{e}.{proj}")
                for part, rows in expert_parts(experts, proj):
                    part_name = f"{name}.{e}.{part}"
                    if spec is None:
                        excluded.append(part_name)
                    else:
                        out.append(_part_spec(part_name, spec, rows))
    return out, excluded


def expert_base_tensors(
    model: nn.Module, tensors: dict[str, torch.Tensor], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Replace the 3-D expert tensors in ``tensors`` by per-expert float parts.

    Every expert part gets its bias (if the experts have biases) as ``<part>.bias``; parts
    whose weight is not quantized also get their float ``<part>.weight``.
    """
    out = dict(tensors)
    for name, experts in expert_modules(model):
        first = experts.__dict__["_first_proj"]
        for p in (first, "down_proj"):
            out.pop(f"{name}.{p}", None)
            out.pop(f"{name}.{p}_bias", None)
        for e in range(int(experts.num_experts)):
            for proj in (first, "down_proj"):
                layer: Any = experts.expert(e).get_submodule(proj)
                quantized = layer_export(f"{name}.{e}.{proj}", layer) is not None
                bias = layer.bias
                for part, rows in expert_parts(experts, proj):
                    key = f"{name}.{e}.{part}"
                    if not quantized:
                        out[f"{key}.weight"] = layer.weight.detach()[rows].to(dtype).contiguous()
                    if bias is not None:
                        out[f"{key}.bias"] = bias.detach()[rows].to(dtype).contiguous()
    return out


@torch.no_grad()
def unify_expert_input_amax(model: nn.Module) -> list[list[str]]:
    """Give all experts of a layer one static input amax per projection (the max), in place.

    Fused MoE kernels take one activation scale per projection and layer (vLLM and
    TensorRT-LLM reduce per-expert ``input_scale`` to their maximum when loading), so export
    writes that value for every expert and the model computes what the engine will. Experts
    whose input quantizers have different formats (experts of one projection quantized
    differently) are unified per format. Experts exported in float whose input is still
    quantized take part too (the engine's one scale covers them).

    Returns:
        The changed groups (names of the expert projections).
    """
    changed: list[list[str]] = []
    for name, experts in expert_modules(model):
        for proj in (experts.__dict__["_first_proj"], "down_proj"):
            by_kind: dict[str, list[tuple[str, TensorQuantizer]]] = {}
            for e in range(int(experts.num_experts)):
                n = f"{name}.{e}.{proj}"
                q = model.get_submodule(n)._modules.get("input_quantizer")
                if isinstance(q, TensorQuantizer) and q.is_enabled:
                    by_kind.setdefault(format_kind(q.format), []).append((n, q))
            for live in by_kind.values():
                amaxes = [q.amax for _, q in live]
                if len(live) < 2 or any(a is None for a in amaxes):
                    continue
                top = torch.stack([a.float() for a in amaxes if a is not None]).amax(dim=0)
                if all(torch.equal(a, top) for a in amaxes if a is not None):
                    continue
                for _, q in live:
                    q.amax = top
                changed.append([n for n, _ in live])
    return changed


def _set_activation_amax(q: TensorQuantizer, scale: torch.Tensor) -> None:
    rule = activation_rule(q)
    if rule is None:
        raise ValueError(f"path: a static scale was stored for dynamic {q.format.describe()}")
    q.amax = rule.decode(scale.float().reshape(()))


def _load_part(
    layer: nn.Module,
    key: str,
    tensors: dict[str, torch.Tensor],
    layers: dict[str, Any],
    used: set[str],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(weight rows, bias rows)`` of one part; quantized parts also restore input scales."""
    from modeloptim.torch.export.modelopt_layout import decode_weight

    local = {k.removeprefix(f"{key}."): v for k, v in tensors.items() if k.startswith(f"{key}.")}
    local = {k: v for k, v in local.items() if "." not in k}
    used.update(f"{key}.{k}" for k in local)
    bias = local.get("bias")
    if key not in layers:
        return local.get("weight"), bias
    stages = [q for q in leaf_quantizers(layer._modules.get("weight_quantizer")) if q.is_enabled]
    if not stages:
        raise ValueError(f"path: layer {key!r} is packed but its weight quantizer is off")
    if "weight_scale_2" in local and len(stages) > 1:
        _set_activation_amax(stages[1], local["weight_scale_2"])
    iq = layer._modules.get("input_quantizer")
    if isinstance(iq, TensorQuantizer):
        if "input_scale" in local:
            _set_activation_amax(iq, local["input_scale"])
        if "pre_quant_scale" in local:
            iq.pre_quant_scale = local["pre_quant_scale"]
    packed = {k: v for k, v in local.items() if k != "bias"}
    return decode_weight(packed, layers[key]).dequantize(torch.float32), bias


@torch.no_grad()
def load_expert_layers(
    model: nn.Module, tensors: dict[str, torch.Tensor], layers: dict[str, Any]
) -> tuple[set[str], set[str], set[str]]:
    """Fill ``model``'s 3-D experts from per-expert checkpoint parts (see module docstring).

    Args:
        model: a freshly built model whose quantizers were restored.
        tensors: all checkpoint tensors.
        layers: the checkpoint's per-layer packing descriptions (by layer name).

    Returns:
        ``(checkpoint keys used, layer names handled, model state_dict keys filled)``.

    Raises:
        ValueError: a part is missing from the checkpoint.
    """
    used: set[str] = set()
    handled: set[str] = set()
    filled: set[str] = set()
    for name, experts in expert_modules(model):
        first = experts.__dict__["_first_proj"]
        for e in range(int(experts.num_experts)):
            for proj in (first, "down_proj"):
                layer: Any = experts.expert(e).get_submodule(proj)
                weight = layer.weight  # a view of the 3-D parameter
                bias = layer.bias
                packed = False
                for part, rows in expert_parts(experts, proj):
                    key = f"{name}.{e}.{part}"
                    w, b = _load_part(layer, key, tensors, layers, used)
                    if w is None:
                        raise ValueError(f"path: checkpoint has no weight for expert part {key!r}")
                    weight.data[rows] = w.to(weight.dtype)
                    if bias is not None and b is not None:
                        bias.data[rows] = b.to(bias.dtype)
                    packed = packed or key in layers
                    handled.add(key)
                if packed:  # the weight now holds the dequantized codes: skip that stage
                    stages = leaf_quantizers(layer._modules.get("weight_quantizer"))
                    next(q for q in stages if q.is_enabled).disable()
        for p in (first, "down_proj"):
            filled.add(f"{name}.{p}")
            if experts._parameters.get(f"{p}_bias") is not None:
                filled.add(f"{name}.{p}_bias")
    return used, handled, filled
