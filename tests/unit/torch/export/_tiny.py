"""A tiny random Llama and helpers shared by the export tests."""

from __future__ import annotations

import copy

import torch

from modeloptim.torch.quantization.config import presets
from modeloptim.torch.quantization.model_quant import quantize

VOCAB = 256


def tiny_llama(hidden=128, inter=256, layers=2, tie=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(cfg).eval()


def calib_ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (2, 16), generator=g)


def eval_ids():
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, VOCAB, (2, 12), generator=g)


def preset(name):
    """A preset; algorithms not built yet (awq, smoothquant) fall back to max calibration (RTN)."""
    cfg = copy.deepcopy(getattr(presets, name))
    algo = cfg.get("algorithm")
    method = algo.get("method") if isinstance(algo, dict) else algo
    if method not in (None, "max"):
        cfg["algorithm"] = "max"
    return cfg


def quantized(model, cfg, ids=None):
    ids = calib_ids() if ids is None else ids

    def loop(m):
        with torch.no_grad():
            m(input_ids=ids)

    return quantize(model, cfg, loop)


def logits(model, ids=None):
    with torch.no_grad():
        return model(input_ids=eval_ids() if ids is None else ids).logits.float()
