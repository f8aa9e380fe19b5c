"""``export_hf_checkpoint``: a quantized HF causal LM -> a deployable checkpoint folder.

The folder holds safetensors with packed weights and their scales, ``config.json`` with a
``quantization_config``, the layout's own config file, the tokenizer and generation config,
and ``modeloptim_quantizers.json`` (our loader's description of the quantizers; serving
engines ignore it). Layouts are a registry (:data:`LAYOUTS`): ``"modelopt"`` (TensorRT-LLM /
vLLM / SGLang ModelOpt checkpoints) and ``"compressed-tensors"``.

Policy for partly quantized models: layers without an enabled weight quantizer are exported
in float and listed in ``exclude_modules`` / ``ignore`` (input/output quantizers left on keep
their amax in ``modeloptim_quantizers.json`` for the exact reload; see :mod:`.float_layers`). A
model with no quantized layer at all is refused with a ``ValueError`` (use
``save_pretrained``); so is any layer whose format combination has no checkpoint form (the
message names the layer and the supported pairs).
All checks run before anything is written or changed.

Before writing, layers that read the same tensor (q/k/v, gate/up; found by
:func:`modeloptim.torch.trace.shared_input_groups`) get one input amax and one
``pre_quant_scale`` (:mod:`.fused`), and the experts of a 3-D MoE layer one input amax per
projection (:mod:`.moe`), in place, as the fused serving kernels require; then the
few static scales whose multiplier no float32 engine scale expresses are snapped to the
nearest one that is (:func:`~.scales.snap_model_scales`, in place, about one ulp), so the
checkpoint's scales alone reproduce the model bit for bit (:func:`~.loader.load_hf_checkpoint`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeloptim.torch.export.ct_layout import (
    ct_kv_tensors,
    ct_layer_tensors,
    ct_quant_config,
    layer_scheme,
)
from modeloptim.torch.export.float_layers import (
    float_layer_activation_state,
    prepare_float_layers,
)
from modeloptim.torch.export.fused import harmonize_groups
from modeloptim.torch.export.layers import LayerExport, format_kind, kv_quantizers
from modeloptim.torch.export.modelopt_writer import (
    KV_ALGOS,
    activation_scale,
    modelopt_layer_tensors,
    modelopt_quant_configs,
    warn_unaligned_int4,
)
from modeloptim.torch.export.moe import (
    collect_export_layers,
    expert_base_tensors,
    expert_modules,
    unify_expert_input_amax,
)
from modeloptim.torch.export.packers import UnsupportedFormatError, leaf_quantizers, pack_weight
from modeloptim.torch.export.scales import snap_model_scales
from modeloptim.torch.export.writer import (
    check_free_space,
    copy_side_files,
    tensors_nbytes,
    write_json,
    write_safetensors,
)
from modeloptim.torch.quantization.compress import CompressedWeight
from modeloptim.torch.quantization.conversion import named_quantizers
from modeloptim.torch.quantization.nn import SequentialQuantizer, TensorQuantizer
from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule
from modeloptim.torch.quantization.qtensor import QTensor
from modeloptim.utils.io import atomic_dir

__all__ = [
    "EXACT_FILE",
    "LAYOUTS",
    "QUANTIZERS_FILE",
    "ExportLayout",
    "ExportReport",
    "export_hf_checkpoint",
]

QUANTIZERS_FILE = "modeloptim_quantizers.json"
#: no longer written: the reload is exact from the engine-facing scales (:mod:`.scales`).
#: The name stays for code that checks for it.
EXACT_FILE = "modeloptim_scales.pth"


_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class ExportLayout(str, Enum):
    """Checkpoint layouts."""

    MODELOPT = "modelopt"
    COMPRESSED_TENSORS = "compressed-tensors"


@dataclass
class ExportReport:
    """What :func:`export_hf_checkpoint` wrote.

    Attributes:
        export_dir: the folder.
        layout: the layout name.
        quant_algo: checkpoint algo (``MIXED_PRECISION`` when layers differ).
        kv_cache_quant_algo: KV-cache algo or ``None``.
        quantized_layers: number of packed layers.
        excluded: linear layers left in float.
        files: files written.
        weight_bytes: bytes of all tensors written.
        quantized_weight_bits: storage bits per quantized weight (codes + scales).
        harmonized_groups: fused groups whose input scales were unified.
        snapped: quantizers whose scale was snapped to an engine-expressible value.
        folded: float-exported layers whose scale-only smoothing (``pre_quant_scale``) was
            folded into their weight (:func:`~.float_layers.prepare_float_layers`).
    """

    export_dir: str
    layout: str
    quant_algo: str | None
    kv_cache_quant_algo: str | None
    quantized_layers: int
    excluded: list[str]
    files: list[str]
    weight_bytes: int
    quantized_weight_bits: float
    harmonized_groups: list[list[str]] = field(default_factory=list)
    snapped: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain-data form (for ``--json``)."""
        return dict(vars(self))


@dataclass
class LayoutOutput:
    """What a layout produces: checkpoint tensors and config dicts."""

    tensors: dict[str, torch.Tensor]
    config_qc: dict[str, Any]
    extra_files: dict[str, Any]
    layer_info: dict[str, Any]


LayoutFn = Callable[
    [list[LayerExport], dict[str, QTensor], list[str], list[tuple[str, Any, Any]]], LayoutOutput
]


class _LayoutRegistry:
    def __init__(self) -> None:
        self._fns: dict[str, LayoutFn] = {}

    def register(self, name: str) -> Callable[[LayoutFn], LayoutFn]:
        def deco(fn: LayoutFn) -> LayoutFn:
            self._fns[name] = fn
            return fn

        return deco

    def get(self, name: str) -> LayoutFn:
        return self._fns[name]


LAYOUTS = _LayoutRegistry()


@LAYOUTS.register(ExportLayout.MODELOPT.value)
def _modelopt_layout(
    layers: list[LayerExport],
    packed: dict[str, QTensor],
    excluded: list[str],
    kv: list[tuple[str, Any, Any]],
) -> LayoutOutput:
    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {}
    warn_unaligned_int4(packed)
    for spec in layers:
        t, extra = modelopt_layer_tensors(spec, packed[spec.name])
        tensors.update({f"{spec.name}.{k}": v for k, v in t.items()})
        info[spec.name] = extra
    kv_algo = None
    for name, k, v in kv:
        kinds = {format_kind(k.format), format_kind(v.format)}
        if len(kinds) != 1 or next(iter(kinds)) not in KV_ALGOS:
            raise UnsupportedFormatError(
                f"layer {name!r}: KV-cache formats {sorted(kinds)} have no checkpoint format "
                f"(supported: {sorted(KV_ALGOS)})"
            )
        kv_algo = KV_ALGOS[next(iter(kinds))]
        for proj, q, key in (("k_proj", k, "k_scale"), ("v_proj", v, "v_scale")):
            scale = activation_scale(q)
            if scale is None:
                raise UnsupportedFormatError(f"layer {name!r}: {key} needs a calibrated amax")
            tensors[f"{name}.{proj}.{key}"] = scale
    config_qc, hf_quant_config = modelopt_quant_configs(layers, excluded, kv_algo)
    return LayoutOutput(tensors, config_qc, {"hf_quant_config.json": hf_quant_config}, info)


@LAYOUTS.register(ExportLayout.COMPRESSED_TENSORS.value)
def _compressed_tensors_layout(
    layers: list[LayerExport],
    packed: dict[str, QTensor],
    excluded: list[str],
    kv: list[tuple[str, Any, Any]],
) -> LayoutOutput:
    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {}
    for spec in layers:
        layer_scheme(spec)  # validates (smoothing, supported pair) before any work
    for spec in layers:
        t = ct_layer_tensors(spec, packed[spec.name])
        tensors.update({f"{spec.name}.{k}": v for k, v in t.items()})
        info[spec.name] = packed[spec.name].extra_state()
    for name, k, v in kv:
        tensors.update(ct_kv_tensors(name, k, v))
    config_qc = ct_quant_config(layers, excluded, bool(kv), _ct_version())
    return LayoutOutput(tensors, config_qc, {}, info)


def _ct_version() -> str:
    try:
        from importlib.metadata import version

        return version("compressed-tensors")
    except Exception:  # the package is optional: any version string is informational
        return "0.0.0"


def _is_quantizer_key(key: str) -> bool:
    return any(part.endswith("_quantizer") for part in key.split("."))


def _base_tensors(
    model: nn.Module, packed_layers: set[str], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Float tensors of everything that is not a quantizer or a packed weight (ties once)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...], torch.dtype]] = set()
    for key, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor) or _is_quantizer_key(key):
            continue
        owner, _, leaf = key.rpartition(".")
        if owner in packed_layers and leaf == "weight":
            continue
        if any(key.startswith(f"{n}.weight.") for n in packed_layers):
            continue
        ident = (t.data_ptr(), tuple(t.shape), t.dtype)
        if ident in seen:
            continue  # tied weight (e.g. lm_head = embed_tokens): written once, as HF does
        seen.add(ident)
        out[key] = t.detach().to(dtype) if t.is_floating_point() else t.detach()
    return out


def _packed_stages(model: nn.Module) -> set[int]:
    """The ids of weight-quantizer stages that mtq.compress disabled because the codes hold them."""
    out: set[int] = set()
    for module in model.modules():
        stored = module._modules.get("weight")
        if isinstance(stored, CompressedWeight):
            leaves = leaf_quantizers(module._modules.get("weight_quantizer"))
            if stored.packed_stage < len(leaves):
                out.add(id(leaves[stored.packed_stage]))
    return out


def _quantizer_description(model: nn.Module) -> dict[str, Any]:
    packed = _packed_stages(model)  # described as enabled: the loader packs them again
    out: dict[str, Any] = {}
    for name, q, _ in named_quantizers(model):
        members = q.quantizers() if isinstance(q, SequentialQuantizer) else [q]
        cfgs = []
        for m in members:
            cfg = m.quant_attribute_cfg.model_dump(mode="json")
            cfg.pop("enable", None)
            cfgs.append(cfg)
        out[name] = {
            "enable": [m.is_enabled or id(m) in packed for m in members],
            "quant": [bool(getattr(m, "_if_quant", True)) for m in members],
            "cfg": cfgs if isinstance(q, SequentialQuantizer) else cfgs[0],
        }
    return out


def _default_run(model: nn.Module, sample_input: Any) -> Callable[[nn.Module], Any]:
    def run(m: nn.Module) -> Any:
        if sample_input is not None:
            return m(**sample_input) if isinstance(sample_input, dict) else m(sample_input)
        device = next(m.parameters()).device
        ids = torch.arange(1, 9, device=device).reshape(1, 8)
        return m(input_ids=ids)

    return run


def _is_layer(_name: str, module: nn.Module) -> bool:
    return isinstance(module, QuantModule) and isinstance(
        module._modules.get("weight_quantizer"), (TensorQuantizer, SequentialQuantizer)
    )


def _shared_groups(model: nn.Module, sample_input: Any) -> list[list[str]]:
    """Quantized layers grouped by the tensor they read (the trace module's finder)."""
    from modeloptim.torch.trace import shared_input_groups

    run = _default_run(model, sample_input)
    with torch.no_grad():
        found = shared_input_groups(model, forward_loop=run, predicate=_is_layer)
    return [g.names for g in found]


def _check_args(model: Any, export_dir: Any, dtype: Any, layout: Any) -> ExportLayout:
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(
            f"model: expected a Hugging Face PreTrainedModel, got {type(model).__name__}"
        )
    if not isinstance(export_dir, (str, os.PathLike)):
        raise TypeError(f"export_dir: expected a path, got {type(export_dir).__name__}")
    if dtype is not None and dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype: expected None, torch.float32, float16 or bfloat16, got {dtype}")
    try:
        return ExportLayout(layout)
    except ValueError:
        raise ValueError(
            f"layout: expected one of {[e.value for e in ExportLayout]}, got {layout!r}"
        ) from None


def _packed_weight(spec: LayerExport) -> QTensor:
    stored = spec.module._modules.get("weight")
    if isinstance(stored, CompressedWeight):
        return stored.qtensor
    weight = spec.module._parameters["weight"]
    assert weight is not None
    return pack_weight(spec.module._modules["weight_quantizer"], weight)[0]


def export_hf_checkpoint(
    model: nn.Module,
    export_dir: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
    layout: str = "modelopt",
    *,
    tokenizer: Any = None,
    sample_input: Any = None,
    max_shard_bytes: int = 5 * 2**30,
) -> ExportReport:
    """Export a quantized Hugging Face causal LM as a deployable quantized checkpoint.

    Args:
        model: a ``transformers`` model quantized with ``mtq.quantize`` (optionally
            ``mtq.compress``-ed). Fused groups are harmonized in place (see module doc).
        export_dir: target folder; replaced atomically (a failure leaves nothing behind).
        dtype: dtype of unquantized tensors (default: the model's dtype).
        layout: ``"modelopt"`` or ``"compressed-tensors"``.
        tokenizer: optional tokenizer to save alongside (else copied from the model's folder).
        sample_input: model input for the fused-group discovery pass (default: 8 token ids).
        max_shard_bytes: largest safetensors shard.

    Returns:
        An :class:`ExportReport`.

    Raises:
        TypeError / ValueError: bad arguments, unquantized model, unsupported layer format.
        OSError: not enough space or the folder cannot be written (nothing left behind).
    """
    lay = _check_args(model, export_dir, dtype, layout)
    if lay is not ExportLayout.MODELOPT and expert_modules(model):
        raise UnsupportedFormatError(
            f"layout: 3-D MoE experts export in the 'modelopt' layout only, not {lay.value!r} "
            "(nothing was written)"
        )
    layers, excluded = collect_export_layers(model)
    kv = kv_quantizers(model)
    if not layers and not kv:
        raise ValueError(
            "model: no quantized layer found; quantize it with mtq.quantize first, or save an "
            "unquantized model with save_pretrained"
        )
    out_dtype = dtype or next(model.parameters()).dtype
    packed = {s.name: _packed_weight(s) for s in layers}  # validates every layer first
    folded = prepare_float_layers(model)  # float layers with smoothed inputs: check, fold
    groups: list[list[str]] = []
    if any(s.input_quantizer is not None or s.pre_quant_scale is not None for s in layers):
        groups = harmonize_groups(model, _shared_groups(model, sample_input))
        groups += unify_expert_input_amax(model)
    snapped = snap_model_scales(model)
    if groups or snapped:  # weights may have been re-smoothed or re-scaled: pack again
        layers, excluded = collect_export_layers(model)
        packed = {s.name: _packed_weight(s) for s in layers}
    result = LAYOUTS.get(lay.value)(layers, packed, excluded, kv)
    if lay is ExportLayout.MODELOPT:  # TensorRT-LLM wants smoothing factors in the model dtype
        for key, t in result.tensors.items():
            if key.endswith(".pre_quant_scale"):
                result.tensors[key] = t.to(out_dtype)
    for info in result.layer_info.values():  # dequantize to the exported float dtype
        info["dtype"] = str(out_dtype).removeprefix("torch.")
    tensors = expert_base_tensors(model, _base_tensors(model, set(packed), out_dtype), out_dtype)
    overlap = set(tensors) & set(result.tensors)
    if overlap:
        raise ValueError(f"model: checkpoint names clash: {sorted(overlap)[:3]}")
    tensors.update(result.tensors)

    target = Path(export_dir)
    check_free_space(
        target.parent if target.parent != Path("") else Path("."), tensors_nbytes(tensors)
    )
    config = model.config.to_dict()  # type: ignore[union-attr,operator]
    config["quantization_config"] = result.config_qc
    config.pop("torch_dtype", None)
    config["dtype"] = str(out_dtype).removeprefix("torch.")
    quantizers = {
        "format": "modeloptim-quantizers",
        "version": 1,
        "layout": lay.value,
        "quantizers": _quantizer_description(model),
        # quantized activations of float-exported layers: no engine tensor carries them
        "float_layer_activations": float_layer_activation_state(model),
        "layers": result.layer_info,
    }
    with atomic_dir(target) as tmp:
        files = write_safetensors(tmp, tensors, max_shard_bytes)
        write_json(tmp / "config.json", config)
        for fname, obj in result.extra_files.items():
            write_json(tmp / fname, obj)
        write_json(tmp / QUANTIZERS_FILE, quantizers)
        files += ["config.json", *result.extra_files, QUANTIZERS_FILE]
        files += copy_side_files(model, tmp, tokenizer)
    n_q = sum(p.shape.numel() for p in packed.values())
    q_bytes = sum(p.nbytes for p in packed.values())
    algos = {s.quant_algo for s in layers}
    return ExportReport(
        export_dir=str(target),
        layout=lay.value,
        quant_algo=next(iter(algos)) if len(algos) == 1 else ("MIXED_PRECISION" if algos else None),
        kv_cache_quant_algo=result.config_qc.get("kv_cache_quant_algo"),
        quantized_layers=len(layers),
        excluded=excluded,
        files=files,
        weight_bytes=tensors_nbytes(tensors),
        quantized_weight_bits=8.0 * q_bytes / max(1, n_q),
        harmonized_groups=groups,
        snapped=snapped,
        folded=folded,
    )


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())
