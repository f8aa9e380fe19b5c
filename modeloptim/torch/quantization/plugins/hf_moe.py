"""Hugging Face MoE experts stored as 3-D weights (transformers 5.x): per-expert quantizers.

transformers 5.x keeps all experts of a MoE layer in one module (``Qwen2MoeExperts``,
``Qwen3MoeExperts``, ``MixtralExperts``, ``OlmoeExperts``, ...) with 3-D parameters
``gate_up_proj`` ``[E, 2*I, H]`` and ``down_proj`` ``[E, H, I]`` and a forward
``(hidden_states [T, H], top_k_index [T, k], top_k_weights [T, k]) -> [T, H]`` that runs each
hit expert with ``F.linear(x, gate_up_proj[e])``. There is no ``nn.Linear`` to wrap, so
without this plugin every expert stays in full precision.

Such a module is found *structurally* (:func:`is_hf_experts`: an ``num_experts`` attribute,
3-D ``gate_up_proj``/``up_proj`` and ``down_proj`` parameters with one slice per expert and
consistent widths, and a forward taking ``hidden_states`` and the routing indices and weights
positionally; GPT-OSS's transposed, biased, interleaved experts included), and
its class is registered by :func:`register_hf_moe_experts`. Converting it gives it one child
per expert holding two linear *views* (:class:`HFExpertProjection`, no parameters of their
own: their ``weight`` is the expert's ``[out, in]`` slice of the 3-D parameter), each a
quantized layer with ``input_quantizer``, ``weight_quantizer`` and ``output_quantizer``::

    model.layers.0.mlp.experts.3.gate_up_proj.weight_quantizer
    model.layers.0.mlp.experts.3.down_proj.input_quantizer

so stock patterns reach them (``*weight_quantizer``, ``*experts*weight_quantizer``,
``*gate_up_proj*``, ``*experts.3.*``), every expert has its own amax (per tensor, per row or
per block of *its* weight, exactly as an ``nn.Linear`` of that shape), and calibration, AWQ,
SmoothQuant and GPTQ see each expert projection as a linear layer reading (a row subset of)
the layer's hidden states.

The layout differs from ModelOpt, which keeps ``ModuleList``s
``<experts>.gate_up_proj_weight_quantizers.<e>`` plus one shared
``<experts>.gate_up_proj_input_quantizer`` on the experts module; here each expert has its own
input quantizers (export takes their maximum where a serving engine wants one scale). So that
patterns written for ModelOpt keep working, every expert quantizer also answers to its
ModelOpt name (:func:`modelopt_expert_alias`, registered in
:data:`~modeloptim.torch.quantization.quantizer_aliases.QUANTIZER_ALIASES`)::

    model.layers.0.mlp.experts.3.gate_up_proj.weight_quantizer
        alias model.layers.0.mlp.experts.gate_up_proj_weight_quantizers.3
    model.layers.0.mlp.experts.3.down_proj.input_quantizer
        alias model.layers.0.mlp.experts.down_proj_input_quantizer  (every expert's)

``"*gate_up_proj_weight_quantizers*"`` or ``"*experts.down_proj_input_quantizer"`` therefore
reach the same quantizers as in ModelOpt. For ``parent_class`` an alias is owned by the
experts module, registered under its class name (``{"parent_class": "Qwen2MoeExperts",
"quantizer_name": "*input_quantizer"}``). Output quantizers keep only their own names.

The quantized forward is the eager loop of the original (the ``experts_implementation``
chosen in the config, e.g. ``grouped_mm``, is not used once quantized). While any input
quantizer of the module is calibrating, every expert runs on *all* tokens of the layer, so
experts the router never picks on the calibration data still get an input amax; only the
routed rows reach the output, which therefore stays the float model's output. The same holds
while a forward hook is registered on an expert projection: the shared-input finders and the
AWQ/SmoothQuant/GPTQ statistics observe layers through hooks, so they see every expert read
the layer's full hidden states (all experts' ``gate_up_proj`` join the shared expert's
gate/up in one shared-input group, and no expert lacks statistics).

Elsewhere: ``export_hf_checkpoint`` writes the experts unfused, one layer per expert
projection (:mod:`modeloptim.torch.export.moe`); ``mtq.compress`` and ``mtq.auto_quantize``
refuse such models with a clear error instead of leaving the experts out; gradients (QAT)
and ``mtq.fold_weight`` reach the 3-D parameters through the views.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from modeloptim.torch.quantization.nn.modules.quant_module import (
    QuantizerLike,
    QuantLinearConvBase,
    QuantModule,
    QuantModuleRegistry,
)
from modeloptim.torch.quantization.nn.modules.sequential_quantizer import SequentialQuantizer
from modeloptim.torch.quantization.nn.modules.tensor_quantizer import TensorQuantizer
from modeloptim.torch.quantization.quantizer_aliases import QUANTIZER_ALIASES, QuantizerAlias
from modeloptim.torch.trace.linear_layouts import LINEAR_LAYOUTS

__all__ = [
    "HFExpertProjection",
    "QuantHFExpertProjection",
    "QuantHFMoEExperts",
    "expert_layout",
    "fuse_unfused_expert_weights",
    "is_hf_experts",
    "modelopt_expert_alias",
    "register_hf_moe_experts",
]


def _routed_forward(cls: type[nn.Module]) -> bool:
    """Whether ``cls.forward`` is ``(hidden_states, expert indices, expert weights)``.

    Families name the two routing arguments differently (``top_k_index``/``top_k_weights``,
    ``router_indices``/``routing_weights``, ...) but all pass them positionally, with
    ``hidden_states`` first and nothing else required.
    """
    try:
        sig = inspect.signature(cls.forward)  # follows functools.wraps (__wrapped__)
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p for name, p in sig.parameters.items() if name != "self"]
    positional = [p for p in params if p.kind in kinds]
    required = [p for p in params if p.default is inspect.Parameter.empty and p.kind in kinds]
    return (
        len(positional) >= 3
        and positional[0].name == "hidden_states"
        and len(required) <= 3
        and all(p in positional[:3] for p in required)
    )


def expert_layout(module: nn.Module) -> tuple[str, bool] | None:
    """``(name of the first projection, transposed)`` of a 3-D experts module, else ``None``.

    The first projection is ``gate_up_proj`` (gated experts) or ``up_proj``. ``transposed``
    is the module's ``is_transposed`` flag (weights stored ``[E, in, out]``). Widths must be
    consistent: the first projection reads the hidden size that ``down_proj`` writes, and
    ``down_proj`` reads its output (half of it when gated).
    """
    n = getattr(module, "num_experts", None)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return None
    params = module._parameters
    down = params.get("down_proj")
    first = "gate_up_proj" if params.get("gate_up_proj") is not None else "up_proj"
    up = params.get(first)
    if up is None or down is None or up.dim() != 3 or down.dim() != 3:
        return None
    if up.shape[0] != n or down.shape[0] != n:
        return None
    transposed = bool(getattr(module, "is_transposed", False))
    (up_out, up_in), (down_out, down_in) = (
        (up.shape[1:][::-1], down.shape[1:][::-1]) if transposed else (up.shape[1:], down.shape[1:])
    )
    inner = up_out // 2 if first == "gate_up_proj" else up_out
    if up_in != down_out or inner != down_in:
        return None
    return first, transposed


def is_hf_experts(module: nn.Module) -> bool:
    """Whether ``module`` is a 3-D MoE experts module (see the module docstring)."""
    if isinstance(module, QuantModule) or expert_layout(module) is None:
        return False
    return _routed_forward(type(module))


class HFExpertProjection(nn.Module):
    """One expert's projection as a linear layer over a slice of the 3-D parameter.

    Holds no parameters: :attr:`weight` is ``experts.<param>[index]`` as ``[out, in]`` (a
    view; writes go to the 3-D parameter), :attr:`bias` the expert's row of
    ``<param>_bias`` if the module has one. The owning experts module is kept as a plain
    attribute, not a submodule, so the module tree has no cycle.

    Args:
        experts: the experts module owning the 3-D parameter.
        param: its name (``"gate_up_proj"``, ``"up_proj"`` or ``"down_proj"``).
        index: the expert.
        transposed: the parameter is stored ``[E, in, out]``.
    """

    def __init__(self, experts: nn.Module, param: str, index: int, transposed: bool) -> None:
        super().__init__()
        self.__dict__["_experts"] = experts
        self.param = param
        self.index = index
        self.transposed = transposed

    @property
    def weight(self) -> torch.Tensor:
        """The expert's weight ``[out, in]`` (a view of the 3-D parameter)."""
        w: torch.Tensor = getattr(self.__dict__["_experts"], self.param)[self.index]
        return w.T if self.transposed else w

    @property
    def bias(self) -> torch.Tensor | None:
        """The expert's bias ``[out]`` or ``None``."""
        b = self.__dict__["_experts"]._parameters.get(f"{self.param}_bias")
        return None if b is None else b[self.index]

    @property
    def in_features(self) -> int:
        """Input width."""
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        """Output width."""
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in] -> [..., out]`` with this expert's weight."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{self.param}[{self.index}], in={self.in_features}, out={self.out_features}"


class QuantHFExpertProjection(QuantLinearConvBase):
    """Quantized :class:`HFExpertProjection`: input ``[..., in]`` and weight ``[out, in]``.

    Quantized weights are not cached (each read of the view is a new tensor).
    """

    #: The weight is a view of another module's parameter: code that replaces or packs a
    #: layer's own ``weight`` parameter (``mtq.compress``) checks this flag.
    weight_is_view: ClassVar[bool] = True

    def _register_weight_quantization(self) -> None:
        # The weight is a property over the owner's parameter, read by forward directly.
        pass

    def weight_quantizer_pairs(self) -> list[tuple[QuantizerLike, torch.Tensor]]:
        """``(weight_quantizer, this expert's weight [out, in])``."""
        quantizer = self._modules.get("weight_quantizer")
        if not isinstance(quantizer, TensorQuantizer | SequentialQuantizer):
            return []
        return [(quantizer, self.weight)]

    def forward(self, input: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Quantize the input and the weight, ``F.linear``, quantize the output."""
        x = self.input_quantizer(input)
        w = self.weight_quantizer(self.weight)
        return self.output_quantizer(F.linear(x, w, self.bias))


QuantModuleRegistry.register({HFExpertProjection: "HFExpertProjection"})(QuantHFExpertProjection)


@QUANTIZER_ALIASES.register(QuantHFExpertProjection)
def modelopt_expert_alias(name: str, layer: nn.Module) -> QuantizerAlias | None:
    """ModelOpt's name for an expert projection's weight or input quantizer.

    ``<experts>.<e>.<proj>.weight_quantizer`` -> ``<experts>.<proj>_weight_quantizers.<e>``
    and ``<experts>.<e>.<proj>.input_quantizer`` -> ``<experts>.<proj>_input_quantizer`` (the
    same alias for every expert, as ModelOpt shares one input quantizer), owned by the experts
    module. Other quantizers, and projections not at ``<experts>.<e>.<proj>``, get none.

    Args:
        name: the quantizer's full dotted name.
        layer: the :class:`QuantHFExpertProjection` holding it.
    """
    parts = name.split(".")
    if len(parts) < 3:
        return None
    *prefix, box, proj, attr = parts
    param, index = getattr(layer, "param", None), getattr(layer, "index", None)
    if proj != param or box != str(index):  # moved out of its experts module: no ModelOpt name
        return None
    if attr == "weight_quantizer":
        alias = f"{param}_weight_quantizers.{index}"
    elif attr == "input_quantizer":
        alias = f"{param}_input_quantizer"
    else:
        return None
    return QuantizerAlias(".".join([*prefix, alias]), layer.__dict__["_experts"])


# A linear layer for the shared-input finders and AWQ/SmoothQuant/GPTQ (weight is [out, in]).
LINEAR_LAYOUTS.register(HFExpertProjection)


class _Expert(nn.Module):
    """Container of one expert's two quantized projections (``<first>`` and ``down_proj``)."""


class QuantHFMoEExperts(QuantModule):
    """A 3-D experts module whose experts run through quantized per-expert projections.

    After conversion, child ``"<e>"`` holds ``<first>`` (``gate_up_proj`` or ``up_proj``) and
    ``down_proj``, each a :class:`QuantHFExpertProjection`.
    """

    #: Owns no weight quantizer itself: its children do.
    weight_names: ClassVar[tuple[str, ...]] = ()

    def _setup(self, **kwargs: Any) -> None:
        super()._setup(**kwargs)
        layout = expert_layout(self)
        if layout is None:
            raise TypeError(
                f"module: {self.original_cls.__name__} is not a 3-D experts module "
                "(num_experts and 3-D gate_up_proj/up_proj and down_proj parameters)"
            )
        first, transposed = layout
        self.__dict__["_first_proj"] = first
        for e in range(int(self.num_experts)):
            box = _Expert()
            for param in (first, "down_proj"):
                proj = HFExpertProjection(self, param, e, transposed)
                setattr(box, param, QuantModuleRegistry.convert(proj))
            self.add_module(str(e), box)
        # every expert projection, for the per-forward check of _observed
        self.__dict__["_projections"] = [
            p for e in range(int(self.num_experts)) for p in self.expert(e).children()
        ]

    def expert(self, e: int) -> nn.Module:
        """Container of expert ``e``'s quantized projections."""
        return self._modules[str(e)]  # type: ignore[return-value]

    def _observed(self) -> bool:
        """Whether calibration is watching the experts (they then see every token).

        True while an enabled input quantizer of an expert collects calibration statistics,
        or while a forward hook is registered on an expert projection (the shared-input
        finders and the AWQ/SmoothQuant/GPTQ statistics observe layers through hooks).
        """
        for proj in self.__dict__["_projections"]:
            if proj._forward_pre_hooks or proj._forward_hooks:
                return True
            q = proj._modules.get("input_quantizer")
            if isinstance(q, TensorQuantizer) and q._if_calib and q.is_enabled:
                return True
        return False

    def _run_expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        box = self.expert(e)
        h = box._modules[self.__dict__["_first_proj"]](x)  # type: ignore[misc]
        # Gated experts use the module's own gate (chunk or interleaved, custom activations).
        h = self._gate(h) if self.__dict__["_first_proj"] == "gate_up_proj" else self.act_fn(h)
        out = box._modules["down_proj"](h)  # type: ignore[misc]
        if getattr(self, "has_post_expert_norm", False):
            out = self.post_expert_norm(out)
        return out  # type: ignore[no-any-return]

    def _gate(self, gate_up: torch.Tensor) -> torch.Tensor:
        apply = getattr(self, "_apply_gate", None)  # transformers' decorator adds one
        if apply is not None:
            return apply(gate_up)  # type: ignore[no-any-return]
        gate, up = gate_up.chunk(2, dim=-1)
        return self.act_fn(gate) * up  # type: ignore[no-any-return]

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Route ``hidden_states`` ``[T, H]`` to the ``top_k_index`` ``[T, k]`` experts.

        Returns:
            ``[T, H]``: the sum over each token's experts of ``top_k_weights`` times the
            expert's output. Expert ids ``>= num_experts`` (expert-parallel sentinels) are
            skipped.
        """
        n = int(self.num_experts)
        out = torch.zeros_like(hidden_states)
        with torch.no_grad():
            mask = F.one_hot(top_k_index, num_classes=n + 1).permute(2, 1, 0)  # [E+1, k, T]
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero().flatten().tolist()
        all_tokens = self._observed()
        for e in range(n) if all_tokens else [i for i in hit if i < n]:
            top_k_pos, token_idx = torch.where(mask[e])
            if all_tokens:
                # Every expert sees every token (its input quantizers get data); only the
                # routed rows are used.
                y = self._run_expert(e, hidden_states)[token_idx]
            else:
                y = self._run_expert(e, hidden_states[token_idx])
            y = y * top_k_weights[token_idx, top_k_pos, None]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out


def register_hf_moe_experts(model: nn.Module) -> list[str]:
    """Register :class:`QuantHFMoEExperts` for each 3-D experts class found in ``model``.

    Detection is structural (:func:`is_hf_experts`), so every transformers-5 MoE family (and
    any module following the same contract) is covered without a list of names.

    Returns:
        The names of the registered classes (``"Qwen2MoeExperts"``, ...), sorted.
    """
    found: set[type[nn.Module]] = set()
    for module in model.modules():
        cls = type(module)
        if cls not in found and is_hf_experts(module):
            found.add(cls)
    for cls in found:
        if QuantModuleRegistry.get(cls) is None:
            QuantModuleRegistry.register({cls: cls.__name__})(QuantHFMoEExperts)
    return sorted(c.__name__ for c in found)


def _fuse(parts: list[torch.Tensor], interleaved: bool) -> torch.Tensor:
    """``[gate; up]`` rows (or alternating rows when interleaved) of one expert."""
    if len(parts) == 1:
        return parts[0]
    if interleaved:
        return torch.stack(parts, dim=1).reshape(-1, *parts[0].shape[1:])
    return torch.cat(parts, dim=0)


def fuse_unfused_expert_weights(
    model: nn.Module, state_dict: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Fuse per-expert entries of ``state_dict`` into ``model``'s 3-D expert parameters.

    ``<experts>.<e>.gate_proj/up_proj/down_proj.weight|bias`` become ``<experts>.gate_up_proj``
    and so on (a new dict; other entries kept). transformers 5 ``save_pretrained`` writes
    MoE experts unfused, under the names of the original checkpoints, and fuses them again
    in ``from_pretrained``; a state dict read directly from such a folder needs the same
    fusion before ``load_state_dict``.
    """
    out = dict(state_dict)
    for name, experts in model.named_modules():
        if not isinstance(experts, QuantHFMoEExperts):
            continue
        first = experts.__dict__["_first_proj"]
        transposed = bool(getattr(experts, "is_transposed", False))
        interleaved = getattr(experts, "is_concatenated", True) is False
        n = int(experts.num_experts)
        for proj in (first, "down_proj"):
            parts = ["gate_proj", "up_proj"] if proj == "gate_up_proj" else [proj]
            for suffix, target in (("weight", proj), ("bias", f"{proj}_bias")):
                keys = [[f"{name}.{e}.{p}.{suffix}" for p in parts] for e in range(n)]
                if f"{name}.{target}" in out or not all(k in out for row in keys for k in row):
                    continue
                rows = [_fuse([out.pop(k) for k in row], interleaved) for row in keys]
                if suffix == "weight" and transposed:
                    rows = [r.T for r in rows]
                out[f"{name}.{target}"] = torch.stack(rows).contiguous()
    return out
