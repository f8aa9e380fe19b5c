"""What each layer of a quantized model exports as: kinds, quant_algo, and scales.

A weight *kind* (``"fp8"``, ``"int4_block"``, ``"nvfp4"``, ...) and an input kind are read
from the layer's quantizers; :data:`QUANT_ALGOS` maps the pair to the ``quant_algo`` name that
ModelOpt checkpoints carry (``FP8``, ``NVFP4``, ``W4A16_AWQ``, ...). Adding a combination is
one ``QUANT_ALGOS.register(...)`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from modeloptim.torch.export.packers import UnsupportedFormatError, leaf_quantizers, quantizes
from modeloptim.torch.quantization.compress import CompressedWeight
from modeloptim.torch.quantization.formats import (
    Blocked,
    FP8Format,
    IntegerFormat,
    MXFormat,
    NVFP4Format,
    PerChannel,
    QuantFormat,
)
from modeloptim.torch.quantization.nn import TensorQuantizer
from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule

__all__ = [
    "QUANT_ALGOS",
    "LayerExport",
    "QuantAlgoRegistry",
    "collect_layers",
    "format_kind",
    "kv_quantizers",
]


def format_kind(fmt: QuantFormat) -> str:
    """Short kind of a format (``fp8``, ``int4_block``, ``nvfp4``, ...).

    One of ``int8``, ``int8_pc``, ``int4_block``, ``fp8``, ``fp8_pc``, ``fp8_block``,
    ``fp8_dyn``, ``nvfp4``, ``mxfp8``, ``mxfp4`` or ``other:<describe>``.
    """
    g = fmt.granularity
    if isinstance(fmt, NVFP4Format):
        return "nvfp4"
    if isinstance(fmt, MXFormat):
        return {"e4m3": "mxfp8", "e2m1": "mxfp4"}.get(fmt.elem, f"other:{fmt.describe()}")
    if isinstance(fmt, FP8Format) and fmt.exponent_bits == 4:
        if isinstance(g, Blocked) and g.block_numel is None:  # {-1: None}: per token/row
            return "fp8_dyn" if g.dynamic else f"other:{fmt.describe()}"
        if isinstance(g, Blocked):
            return "fp8_block"
        if g.dynamic:
            return "fp8_dyn"
        return "fp8_pc" if isinstance(g, PerChannel) else "fp8"
    if isinstance(fmt, IntegerFormat) and not fmt.unsigned:
        if fmt.bits == 8 and not isinstance(g, Blocked):
            return "int8_pc" if isinstance(g, PerChannel) else "int8"
        if fmt.bits == 4 and isinstance(g, Blocked):
            return "int4_block"
    return f"other:{fmt.describe()}"


class QuantAlgoRegistry:
    """``(weight kind, input kind or None) -> quant_algo`` name."""

    def __init__(self) -> None:
        self._rules: dict[tuple[str, str | None], str] = {}

    def register(self, weight: str, inp: str | None, algo: str) -> None:
        """Declare that layers with this weight/input kind export as ``algo``."""
        self._rules[(weight, inp)] = algo

    def lookup(self, weight: str, inp: str | None) -> str:
        """The algo for a pair; :class:`UnsupportedFormatError` lists the supported pairs."""
        algo = self._rules.get((weight, inp))
        if algo is None:
            known = ", ".join(f"{w}+{i or 'none'}" for w, i in sorted(self._rules, key=str))
            raise UnsupportedFormatError(
                f"weight {weight} with input {inp or 'unquantized'} has no checkpoint format "
                f"(supported weight+input: {known})"
            )
        return algo


QUANT_ALGOS = QuantAlgoRegistry()
for _w, _i, _a in (
    ("fp8", "fp8", "FP8"),
    ("fp8", None, "FP8"),
    ("fp8_pc", "fp8_dyn", "FP8_PER_CHANNEL_PER_TOKEN"),
    ("fp8_pc", None, "FP8_PER_CHANNEL_PER_TOKEN"),
    ("fp8_block", None, "FP8_PB_WO"),
    ("nvfp4", "nvfp4", "NVFP4"),
    ("nvfp4", None, "W4A16_NVFP4"),
    ("nvfp4", "fp8", "W4A8_NVFP4_FP8"),
    ("int4_block", None, "W4A16_AWQ"),
    ("int4_block+fp8", "fp8", "W4A8_AWQ"),
    # ModelOpt's int8_sq qformat is W8A8_SQ_PER_CHANNEL in checkpoints (TensorRT-LLM QuantAlgo;
    # process_layer_quant_config in NVIDIA/Model-Optimizer modelopt/torch/export/quant_utils.py)
    ("int8_pc", "int8", "W8A8_SQ_PER_CHANNEL"),
    ("int8", "int8", "W8A8_SQ_PER_TENSOR_PLUGIN"),
    ("int8_pc", None, "W8A16"),
    ("mxfp8", "mxfp8", "MXFP8"),
    ("mxfp8", None, "MXFP8"),
    ("mxfp4", "mxfp4", "MXFP4"),
    ("mxfp4", None, "W4A16_MXFP4"),
    ("mxfp4", "fp8", "W4A8_MXFP4_FP8"),
):
    QUANT_ALGOS.register(_w, _i, _a)


@dataclass
class LayerExport:
    """One quantized layer as it will be exported.

    Attributes:
        name: qualified module name.
        module: the layer.
        weight_kind: kind of the weight's packed stage (``int4_block+fp8`` for W4A8).
        input_kind: kind of the input quantizer or ``None``.
        quant_algo: checkpoint algo name.
        group_size: block size of block formats (``None`` otherwise).
        weight_stages: the enabled weight quantizer stages.
        input_quantizer: the enabled input quantizer or ``None``.
        pre_quant_scale: the input's ``pre_quant_scale`` or ``None``.
    """

    name: str
    module: nn.Module
    weight_kind: str
    input_kind: str | None
    quant_algo: str
    group_size: int | None
    weight_stages: list[TensorQuantizer] = field(default_factory=list)
    input_quantizer: TensorQuantizer | None = None
    pre_quant_scale: torch.Tensor | None = None


def _group_size(fmt: QuantFormat) -> int | None:
    g = fmt.granularity
    if isinstance(g, Blocked) and list(g.block_sizes) == [-1]:
        return g.block_sizes[-1]
    return None


def _describe(stages: list[TensorQuantizer]) -> str:
    return "+".join(format_kind(q.format) for q in stages)


def layer_export(name: str, module: nn.Module) -> LayerExport | None:
    """The export description of ``module``, or ``None`` when its weight is not quantized.

    Raises:
        UnsupportedFormatError: the layer's format combination has no checkpoint format
            (names the layer).
    """
    if not isinstance(module, QuantModule):
        return None
    if getattr(module, "weight_transposed", False):
        raise UnsupportedFormatError(
            f"layer {name!r}: {type(module).__name__} stores its weight [in, out] (HF Conv1D, "
            "GPT-2 family); checkpoints are written for nn.Linear-layout layers only"
        )
    wq = module._modules.get("weight_quantizer")
    leaves = leaf_quantizers(wq)
    stored = module._modules.get("weight")
    if isinstance(stored, CompressedWeight):  # its packed stage is disabled: it is in the codes
        first = stored.packed_stage
        stages = [leaves[first], *(q for q in leaves[first + 1 :] if q.is_enabled)]
    else:
        stages = [q for q in leaves if q.is_enabled]
    if not stages:
        return None
    iq = module._modules.get("input_quantizer")
    inq = iq if isinstance(iq, TensorQuantizer) and quantizes(iq) else None
    pqs = iq.pre_quant_scale if isinstance(iq, TensorQuantizer) else None
    oq = module._modules.get("output_quantizer")
    try:
        if isinstance(oq, TensorQuantizer) and quantizes(oq):
            raise UnsupportedFormatError("output quantizers have no checkpoint format")
        wkind = _describe(stages)
        ikind = format_kind(inq.format) if inq is not None else None
        algo = QUANT_ALGOS.lookup(wkind, ikind)
    except UnsupportedFormatError as err:
        raise UnsupportedFormatError(f"layer {name!r}: {err}") from None
    return LayerExport(
        name, module, wkind, ikind, algo, _group_size(stages[0].format), stages, inq, pqs
    )


def collect_layers(model: nn.Module) -> tuple[list[LayerExport], list[str]]:
    """``(quantized layers, names of unquantized linear layers)`` of ``model``."""
    layers: list[LayerExport] = []
    excluded: list[str] = []
    for name, module in model.named_modules():
        spec = layer_export(name, module)
        if spec is not None:
            layers.append(spec)
        elif isinstance(module, nn.Linear):
            excluded.append(name)
    return layers, excluded


def kv_quantizers(model: nn.Module) -> list[tuple[str, TensorQuantizer, TensorQuantizer]]:
    """``(attention name, k quantizer, v quantizer)`` for attentions with enabled KV quant."""
    out = []
    for name, module in model.named_modules():
        k = module._modules.get("k_bmm_quantizer")
        v = module._modules.get("v_bmm_quantizer")
        pair = isinstance(k, TensorQuantizer) and isinstance(v, TensorQuantizer)
        if pair and (quantizes(k) or quantizes(v)):
            out.append((name, k, v))
    return out
