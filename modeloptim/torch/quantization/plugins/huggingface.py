"""Hugging Face transformers plugin: KV-cache quantizers for LLaMA-family attention.

transformers 5.x attention modules (``LlamaAttention``, ``MistralAttention``, ``Qwen2Attention``,
...) project q/k/v, apply RoPE, update the cache, then call
``ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager_attention_forward)(self, q, k, v, ...)``
with the name looked up in their modeling module at call time. The wrapper below gives such a
module ``k_bmm_quantizer`` and ``v_bmm_quantizer`` (disabled until a config enables them, e.g.
``FP8_KV_CFG``) and, during its own forward only, makes that lookup return the chosen attention
function with key/value (``[batch, kv_heads, seq, head_dim]``, after RoPE and the cache update)
passed through the quantizers. The model's config and other modules are untouched.

Tied embeddings need nothing special: conversion never replaces parameters, so
``lm_head.weight is embed_tokens.weight`` holds after quantization (and presets disable
``*lm_head*`` as ModelOpt's do).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule, QuantModuleRegistry
from modeloptim.torch.quantization.nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["QuantHFAttention", "register_hf_attentions"]

# transformers model families whose attention follows the pattern above.
_FAMILIES = (
    ("llama", "LlamaAttention"),
    ("mistral", "MistralAttention"),
    ("qwen2", "Qwen2Attention"),
    ("qwen3", "Qwen3Attention"),
    ("gemma", "GemmaAttention"),
    ("gemma2", "Gemma2Attention"),
    ("phi3", "Phi3Attention"),
    ("olmo", "OlmoAttention"),
    ("granite", "GraniteAttention"),
    ("smollm3", "SmolLM3Attention"),
)

_LOCK = threading.RLock()
_INTERFACE = "ALL_ATTENTION_FUNCTIONS"


class _KVQuantInterface:
    """Stand-in for a modeling module's ``ALL_ATTENTION_FUNCTIONS`` while one layer runs."""

    def __init__(self, original: Any, layer: QuantHFAttention) -> None:
        self._original = original
        self._layer = layer

    def get_interface(self, name: str, default: Callable[..., Any]) -> Callable[..., Any]:
        fn = self._original.get_interface(name, default)
        layer = self._layer

        def quantized(module: nn.Module, q: Any, k: Any, v: Any, *args: Any, **kw: Any) -> Any:
            if module is layer:
                k = layer.k_bmm_quantizer(k)
                v = layer.v_bmm_quantizer(v)
            return fn(module, q, k, v, *args, **kw)

        return quantized

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    def __getitem__(self, key: str) -> Any:
        return self._original[key]

    def __contains__(self, key: object) -> bool:
        return key in self._original


class QuantHFAttention(QuantModule):
    """HF attention with ``k_bmm_quantizer``/``v_bmm_quantizer`` on the attention inputs."""

    def _setup(self, **kwargs: Any) -> None:
        super()._setup(**kwargs)
        for attr in ("k_bmm_quantizer", "v_bmm_quantizer"):
            q = TensorQuantizer({"num_bits": (4, 3)})
            q.disable()
            setattr(self, attr, q)

    @contextmanager
    def _patched_interface(self) -> Iterator[None]:
        modeling = sys.modules[self.original_cls.__module__]
        with _LOCK:
            original = getattr(modeling, _INTERFACE)
            setattr(modeling, _INTERFACE, _KVQuantInterface(original, self))
            try:
                yield
            finally:
                setattr(modeling, _INTERFACE, original)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Original attention forward with quantized key/value going into attention."""
        if not (self.k_bmm_quantizer.is_enabled or self.v_bmm_quantizer.is_enabled):
            return super().forward(*args, **kwargs)
        with self._patched_interface():
            return super().forward(*args, **kwargs)


def register_hf_attentions() -> list[str]:
    """Register :class:`QuantHFAttention` for each supported attention class already imported.

    Returns:
        The registered class names (``"LlamaAttention"``, ...).
    """
    registered = []
    for family, cls_name in _FAMILIES:
        # Only families already imported (a model of that family exists): no import cost.
        modeling = sys.modules.get(f"transformers.models.{family}.modeling_{family}")
        if modeling is None:
            continue
        cls = getattr(modeling, cls_name, None)
        if cls is None or not hasattr(modeling, _INTERFACE):
            continue
        if cls not in QuantModuleRegistry:
            QuantModuleRegistry.register({cls: cls_name})(QuantHFAttention)
        registered.append(cls_name)
    return registered
