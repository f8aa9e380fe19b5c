"""Search space of LLaMA-family decoders (LLaMA, Mistral, Qwen2/3, SmolLM...).

Known structure instead of tracing: one ``hidden`` group (embeddings, every projection's input
or output, every RMSNorm, the LM head), per layer one ``heads`` group of key/value head groups
(each K/V head with the query heads that share it, so grouped-query attention stays valid) and
one ``ffn`` group (gate/up rows, down columns), plus the layer stack for depth pruning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modeloptim.torch.prune.builders import SPACE_BUILDERS
from modeloptim.torch.prune.plan import lookup_tensor
from modeloptim.torch.prune.space import AttrSpec, DepthGroup, SearchSpace

__all__ = ["is_llama_family", "llama_space"]

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def _decoder(model: nn.Module) -> tuple[str, Any] | None:
    for prefix in ("model", ""):
        try:
            dec: Any = model.get_submodule(prefix) if prefix else model
        except AttributeError:
            continue
        layers = getattr(dec, "layers", None)
        if isinstance(layers, nn.ModuleList) and isinstance(
            getattr(dec, "embed_tokens", None), nn.Embedding
        ):
            return prefix, dec
    return None


def is_llama_family(model: nn.Module) -> bool:
    """Whether ``model`` has the LLaMA decoder layout this plugin knows."""
    found = _decoder(model)
    if found is None or not len(found[1].layers) or getattr(model, "config", None) is None:
        return False
    layer = found[1].layers[0]
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    return all(isinstance(getattr(attn, n, None), nn.Linear) for n in _ATTN) and all(
        isinstance(getattr(mlp, n, None), nn.Linear) for n in _MLP
    )


@SPACE_BUILDERS.register("llama", is_llama_family)
def llama_space(model: nn.Module, dummy_input: Any, config: dict[str, Any]) -> SearchSpace:
    """Build the space (``dummy_input`` is not needed: the structure is known)."""
    del dummy_input, config
    found = _decoder(model)
    assert found is not None
    prefix, dec = found
    p = f"{prefix}." if prefix else ""
    cfg: Any = model.config
    space = SearchSpace()
    seen_dims: set[tuple[int, int]] = set()
    canonical: dict[int, str] = {}

    def add(group_offset: int, tensor: str, dim: int, channels: torch.Tensor) -> None:
        t = lookup_tensor(model, tensor)
        if (id(t), dim) in seen_dims:  # tied embedding / LM head: one entry
            return
        seen_dims.add((id(t), dim))
        space.add_map(canonical.setdefault(id(t), tensor), dim, channels + group_offset)

    hidden = int(dec.embed_tokens.weight.shape[1])
    hid = space.add_group("hidden", hidden, kind="hidden")
    ar = torch.arange(hidden)
    add(hid.offset, f"{p}embed_tokens.weight", 1, ar)
    add(hid.offset, f"{p}norm.weight", 0, ar)
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear):
        add(hid.offset, "lm_head.weight", 1, ar)
    head_dim = int(getattr(dec.layers[0].self_attn, "head_dim", hidden // cfg.num_attention_heads))
    n_q, n_kv = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
    for i, layer in enumerate(dec.layers):
        lp = f"{p}layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            add(hid.offset, f"{lp}{norm}.weight", 0, ar)
        for n in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"):
            sub = "self_attn" if n in _ATTN else "mlp"
            add(hid.offset, f"{lp}{sub}.{n}.weight", 1, ar)
        for n, sub in (("o_proj", "self_attn"), ("down_proj", "mlp")):
            add(hid.offset, f"{lp}{sub}.{n}.weight", 0, ar)
            if getattr(layer, sub).get_submodule(n).bias is not None:
                add(hid.offset, f"{lp}{sub}.{n}.bias", 0, ar)
        heads = space.add_group(f"layers.{i}.heads", n_kv, kind="heads")
        q_map = torch.arange(n_kv).repeat_interleave((n_q // n_kv) * head_dim)
        kv_map = torch.arange(n_kv).repeat_interleave(head_dim)
        for n, m in (("q_proj", q_map), ("k_proj", kv_map), ("v_proj", kv_map)):
            add(heads.offset, f"{lp}self_attn.{n}.weight", 0, m)
            if layer.self_attn.get_submodule(n).bias is not None:
                add(heads.offset, f"{lp}self_attn.{n}.bias", 0, m)
        add(heads.offset, f"{lp}self_attn.o_proj.weight", 1, q_map)
        inter = int(layer.mlp.gate_proj.weight.shape[0])
        ffn = space.add_group(f"layers.{i}.ffn", inter, kind="ffn")
        fr = torch.arange(inter)
        for n in ("gate_proj", "up_proj"):
            add(ffn.offset, f"{lp}mlp.{n}.weight", 0, fr)
            if layer.mlp.get_submodule(n).bias is not None:
                add(ffn.offset, f"{lp}mlp.{n}.bias", 0, fr)
        add(ffn.offset, f"{lp}mlp.down_proj.weight", 1, fr)
        space.attrs[(f"{lp}mlp".rstrip("."), "intermediate_size")] = AttrSpec(
            "count", fr + ffn.offset
        )
        if hasattr(layer.mlp, "hidden_size"):
            space.attrs[(f"{lp}mlp", "hidden_size")] = AttrSpec("count", ar + hid.offset)
    space.attrs[("", "config.hidden_size")] = AttrSpec("count", ar + hid.offset)
    space.attrs[("", "config.head_dim")] = AttrSpec("const", value=head_dim)
    space.add_layer_attrs(model)
    space.depth.append(DepthGroup(f"{p}layers", len(dec.layers), "config.num_hidden_layers"))
    return space
