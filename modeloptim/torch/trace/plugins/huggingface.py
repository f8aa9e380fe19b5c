"""transformers support for tracing (imported only when transformers is already loaded).

transformers 5.x has no fx tracer of its own (``transformers.utils.fx`` is gone), so this
plugin makes its models traceable by the generic `RobustTracer`:

- while tracing, configs use eager attention and no KV cache (plain tensor code);
- the mask builders (``create_causal_mask`` & co.) become single leaf nodes: they read
  only the batch/sequence sizes, and their control flow depends on mask *data*;
- ``Conv1D`` (GPT-2's transposed Linear) gets a `SymInfo` rule.

Attention (heads, head_dim), MLP width, and hidden size are then found by the generic
processors: ``view(*shape[:-1], -1, head_dim)`` makes heads searchable and head_dim
constant; rotary embeddings tie the two halves of head_dim.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from modeloptim.torch.trace.api import register_trace_context
from modeloptim.torch.trace.context import AnalysisContext
from modeloptim.torch.trace.fixups import register_attr_fixup
from modeloptim.torch.trace.processors.registry import PROCESSORS, NodeProcessor
from modeloptim.torch.trace.result import AnalysisResult, ChannelGroup
from modeloptim.torch.trace.symbols import SYM_RULES, CLType, Symbol, SymInfo

_MASK_FUNCTIONS = (
    "create_causal_mask",
    "create_bidirectional_mask",
    "create_sliding_window_causal_mask",
    "create_bidirectional_sliding_window_mask",
    "create_chunked_causal_mask",
)
_CALLS: dict[int, tuple[Callable[..., Any], dict[str, Any]]] = {}
_KEYS = itertools.count()


def mask_leaf(key: int, **tensors: Any) -> Any:
    """Graph leaf standing for one mask-builder call (constants kept by ``key``)."""
    fn, consts = _CALLS[key]
    return fn(**consts, **tensors)


def _stub(fn: Callable[..., Any]) -> Callable[..., Any]:
    def stub(*args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError(f"{fn.__name__}: expected keyword arguments while tracing")
        proxies = {k: v for k, v in kwargs.items() if isinstance(v, fx.Proxy)}
        if not proxies:
            return fn(**kwargs)
        key = next(_KEYS)
        _CALLS[key] = (fn, {k: v for k, v in kwargs.items() if k not in proxies})
        tracer = next(iter(proxies.values())).tracer
        shadow = getattr(tracer, "shadow", None)
        if shadow is not None:  # builders may return None (no mask needed): decide now
            example = {k: shadow(p.node) for k, p in proxies.items()}
            if (
                all(isinstance(v, torch.Tensor) for v in example.values())
                and mask_leaf(key, **example) is None
            ):
                return None
        return tracer.create_proxy("call_function", mask_leaf, (key,), proxies)

    stub.__wrapped__ = fn  # type: ignore[attr-defined]
    stub._mo_stub = True  # type: ignore[attr-defined]
    return stub


@PROCESSORS.register(mask_leaf)
class MaskBuilderProcessor(NodeProcessor):
    """Mask builders read batch/sequence sizes only: the hidden (last) dim stays free."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Freeze the inputs' leading dims; the mask itself is a new frozen tensor."""
        why = f"attention mask built at {node.name}"
        for name, a in node.kwargs.items():
            lay = ctx.layout(a)
            if isinstance(lay, list):
                keep_last = name == "inputs_embeds"
                ctx.freeze(lay[:-1] if keep_last else lay, why)
        ctx.desc[node] = ctx.fresh(ctx.value(node), why)


def _configs(model: nn.Module) -> list[Any]:
    out: list[Any] = []
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict") and all(c is not cfg for c in out):
            out.append(cfg)
            out.extend(
                getattr(cfg, k)
                for k in getattr(cfg, "sub_configs", {})
                if getattr(cfg, k, None) is not None
            )
    return out


@register_trace_context
@contextlib.contextmanager
def hf_tracing(model: nn.Module) -> Iterator[None]:
    """Eager attention, no cache, leaf mask builders while ``model`` is traced."""
    saved: list[tuple[Any, str, Any]] = []
    for cfg in _configs(model):
        for attr, value in (("_attn_implementation", "eager"), ("use_cache", False)):
            if hasattr(cfg, attr):
                saved.append((cfg, attr, getattr(cfg, attr)))
                with contextlib.suppress(Exception):
                    setattr(cfg, attr, value)
    patched: list[tuple[dict[str, Any], str, Any]] = []
    for mod in list(sys.modules.values()):
        name = getattr(mod, "__name__", "")
        if not name.startswith("transformers.models.") or ".modeling_" not in name:
            continue
        for fname in _MASK_FUNCTIONS:
            fn = mod.__dict__.get(fname)
            if callable(fn) and not getattr(fn, "_mo_stub", False):
                patched.append((mod.__dict__, fname, fn))
                mod.__dict__[fname] = _stub(fn)
    try:
        yield
    finally:
        for d, fname, fn in patched:
            d[fname] = fn
        for cfg, attr, value in saved:
            with contextlib.suppress(Exception):
                setattr(cfg, attr, value)


def _register_conv1d() -> None:
    from transformers.pytorch_utils import Conv1D

    @SYM_RULES.register(Conv1D)
    def _conv1d(m: Conv1D) -> SymInfo:
        i = Symbol("nx", m.nx, CLType.INCOMING)
        o = Symbol("nf", m.nf, CLType.OUTGOING)
        return SymInfo.of(
            i,
            o,
            tensors={"weight": {0: i, 1: o}, "bias": {0: o}},
            inputs={"x": {-1: i}},
            outputs={(): {-1: o}},
            attrs={"nx": i, "nf": o},
        )


def _register_channel_norms() -> None:
    with contextlib.suppress(ImportError):
        from transformers.models.convnext.modeling_convnext import ConvNextLayerNorm

        @SYM_RULES.register(ConvNextLayerNorm)
        def _convnext_ln(m: ConvNextLayerNorm) -> SymInfo:
            c = Symbol("normalized_shape_0", m.normalized_shape[0], CLType.INCOMING)
            dims = {1 if m.data_format == "channels_first" else -1: c}
            return SymInfo.of(
                c,
                tensors={"weight": {0: c}, "bias": {0: c}},
                inputs={"features": dims},
                outputs={(): dims},
                attrs={"normalized_shape": [(c,)]},
            )


def _register_fixups() -> None:
    with contextlib.suppress(ImportError):
        from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

        @register_attr_fixup(GPT2Attention, ops=("split",))
        def _gpt2_attention(m: GPT2Attention) -> None:
            # c_attn packs q, k, v (or k, v for cross-attention): split_size follows its width
            parts = 2 if getattr(m, "is_cross_attention", False) else 3
            m.split_size = m.embed_dim = m.c_attn.nf // parts
            m.num_heads = m.embed_dim // m.head_dim


_register_conv1d()
_register_channel_norms()
_register_fixups()


@dataclass
class HFHparam:
    """One architecture hyperparameter of a transformers model, mapped onto the analysis.

    Attributes:
        name: config-style name (``hidden_size``, ``layers.3.intermediate_size``...).
        size: current value.
        searchable: whether it may change (its group is searchable).
        group: the channel group that realizes it (``None`` for ``num_hidden_layers``).
        reasons: why it is frozen.
    """

    name: str
    size: int
    searchable: bool
    group: ChannelGroup | None = None
    reasons: list[str] = field(default_factory=list)


def hf_search_space(model: nn.Module, result: AnalysisResult) -> dict[str, HFHparam]:
    """Name the analysis' groups after the model's config.

    Covers hidden size, per-layer attention heads (KV heads with their query groups under
    GQA), MLP width, and the number of layers (searchable when every layer sits on the
    residual stream, so a layer can be dropped without changing shapes).

    Args:
        model: an analyzed transformers model.
        result: its `AnalysisResult`.

    Returns:
        ``{name: HFHparam}``.
    """
    out: dict[str, HFHparam] = {}
    get_emb: Any = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    hidden = None
    if emb is not None:
        name = next((n for n, p in model.named_parameters() if p is emb.weight), None)
        hidden = next(iter(result.group_of(name, 1)), None) if name else None
        if hidden is not None:
            out["hidden_size"] = HFHparam(
                "hidden_size", hidden.size, hidden.searchable, hidden, hidden.reasons
            )
    layers_name, layers = _decoder_layers(model)
    if layers is None:
        return out
    for i in range(len(layers)):
        prefix = f"{layers_name}.{i}."
        for g in result.groups:
            if not g.members or not all(m.tensor.startswith(prefix) for m in g.members):
                continue
            blocks = any(" in blocks of " in m.layout for m in g.members)
            key = "heads" if blocks else "intermediate_size"
            if not g.searchable and key == "intermediate_size":
                continue
            prev = out.get(f"layers.{i}.{key}")
            if prev is None or (g.searchable and not prev.searchable):
                out[f"layers.{i}.{key}"] = HFHparam(
                    f"layers.{i}.{key}", g.size, g.searchable, g, g.reasons
                )
    on_stream = hidden is not None and all(
        any(m.tensor.startswith(f"{layers_name}.{i}.") for m in hidden.members)
        for i in range(len(layers))
    )
    out["num_hidden_layers"] = HFHparam(
        "num_hidden_layers",
        len(layers),
        on_stream,
        None,
        [] if on_stream else ["layers are not all on one residual stream"],
    )
    return out


def _decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList | None]:
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n and n:
            return name, mod
    return "", None


__all__ = [
    "HFHparam",
    "MaskBuilderProcessor",
    "hf_search_space",
    "hf_tracing",
    "mask_leaf",
    "torch",
]
