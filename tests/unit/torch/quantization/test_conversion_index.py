"""``set_quantizer_by_cfg`` walks the modules once per call; results equal a per-rule walk.

The reference below is the straightforward algorithm (one ``named_quantizers`` walk per rule,
written out here): applying a chain of presets both ways to two copies of a tiny LLaMA must
leave every quantizer with the same attributes, switches, type (single or sequential) and
amax, including swaps single <-> sequential and ``parent_class`` rules.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization import conversion
from modeloptim.torch.quantization.config.quantize import QuantizerCfgEntry
from modeloptim.torch.quantization.conversion import (
    named_quantizers,
    named_tensor_quantizers,
    replace_quant_module,
    set_quantizer_by_cfg,
)
from modeloptim.torch.quantization.mode import quantizer_state
from modeloptim.torch.quantization.nn.modules.quant_module import QuantModuleRegistry

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf


def _reference_apply(model: nn.Module, quant_cfg: list[QuantizerCfgEntry]) -> dict[str, int]:
    ordered = [e for e in quant_cfg if e.is_default] + [e for e in quant_cfg if not e.is_default]
    counts: dict[str, int] = {}
    for entry in ordered:
        pattern = "*" if entry.is_default else entry.quantizer_name
        hits = 0
        for name, q, parent in list(named_quantizers(model)):
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            cls = QuantModuleRegistry.get_name(getattr(parent, "original_cls", type(parent)))
            if entry.parent_class is not None and cls != entry.parent_class:
                continue
            hits += 1
            if entry.cfg is not None:
                q = conversion._set_cfg(parent, name, q, entry.cfg)
            if entry.resolved_enable is not None:
                q.enable() if entry.resolved_enable else q.disable()
        counts[entry.quantizer_name] = counts.get(entry.quantizer_name, 0) + hits
    return counts


def _tiny_llama() -> nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    replace_quant_module(model)
    return model


def _snapshot(model: nn.Module) -> dict[str, Any]:
    state = quantizer_state(model)
    for name, q in named_tensor_quantizers(model):
        state[f"{name}#amax"] = None if q.amax is None else q.amax.tolist()
    return state


def _set_amax(model: nn.Module) -> None:
    """Give every static quantizer an amax, so dropping it (layout change) is visible."""
    for _, q in named_tensor_quantizers(model):
        g = q.format.amax_granularity
        if g is not None and type(g).__name__ == "PerTensor":
            q.amax = torch.tensor(1.5)


_PARENT_RULES = {
    "quant_cfg": [
        {"quantizer_name": "*", "parent_class": "nn.Linear", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*mlp*", "parent_class": "nn.Linear", "enable": False},
        {"quantizer_name": "*self_attn.o_proj*", "enable": True},
        {"quantizer_name": "*input_quantizer", "parent_class": "nn.Conv2d", "enable": True},
    ],
    "algorithm": "max",
}
CHAIN = [
    mtq.W4A8_AWQ_BETA_CFG,  # sequential weight quantizers
    mtq.FP8_DEFAULT_CFG,  # ... swapped back to single ones
    {
        **mtq.NVFP4_DEFAULT_CFG,
        "quant_cfg": mtq.NVFP4_DEFAULT_CFG["quant_cfg"] + mtq.FP8_KV_CFG["quant_cfg"],
    },
    _PARENT_RULES,
    mtq.INT4_AWQ_CFG,
    mtq.MXFP8_DEFAULT_CFG,
    mtq.INT8_SMOOTHQUANT_CFG,
]


def test_indexed_apply_equals_reference_walk_over_a_preset_chain():
    ours, ref = _tiny_llama(), _tiny_llama()
    for cfg in CHAIN:
        entries = mtq.QuantizeConfig.parse(copy.deepcopy(cfg)).quant_cfg
        _set_amax(ours)
        _set_amax(ref)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unmatched-pattern warnings are not under test
            got = set_quantizer_by_cfg(ours, entries)
        want = _reference_apply(ref, entries)
        assert got == want
        assert _snapshot(ours) == _snapshot(ref)
    kinds = {type(q).__name__ for _, q, _ in named_quantizers(ours)}
    assert kinds == {"TensorQuantizer"}
    assert ours.model.layers[0].self_attn.o_proj.weight_quantizer.is_enabled


def test_chain_really_swaps_and_filters():
    """Guards the comparison above: the chain does reach the paths it is meant to cover."""
    model = _tiny_llama()
    set_quantizer_by_cfg(model, mtq.QuantizeConfig.parse(mtq.W4A8_AWQ_BETA_CFG).quant_cfg)
    assert type(model.model.layers[0].mlp.up_proj.weight_quantizer).__name__ == (
        "SequentialQuantizer"
    )
    set_quantizer_by_cfg(model, mtq.QuantizeConfig.parse(_PARENT_RULES).quant_cfg)
    layer = model.model.layers[1]
    assert not layer.mlp.up_proj.weight_quantizer.is_enabled
    assert layer.self_attn.q_proj.weight_quantizer.is_enabled
    assert layer.self_attn.q_proj.weight_quantizer.format.describe() == "int8 per-channel(axis=0)"
