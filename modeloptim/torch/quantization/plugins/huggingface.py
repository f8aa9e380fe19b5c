"""Hugging Face transformers plugin: KV-cache quantizers for LLaMA-family attention.

transformers 5.x attention modules (``LlamaAttention``, ``MistralAttention``, ``Qwen2Attention``,
...) project q/k/v, apply RoPE, update the cache, then call
``ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager_attention_forward)(self, q, k, v, ...)``
with the name looked up in their modeling module at call time. The wrapper below gives such a
module ``k_bmm_quantizer`` and ``v_bmm_quantizer`` (disabled until a config enables them, e.g.
``FP8_KV_CFG``). When the first such module is converted, the modeling module's table is
replaced by a pass-through whose lookup returns the chosen attention function with key/value
(``[batch, kv_heads, seq, head_dim]``, after RoPE and the cache update) passed through the
calling layer's quantizers; float layers and models get the original function. The model's
config is untouched, and the table stays constant, so ``torch.compile`` traces the quantizers.

Tied embeddings need nothing special: conversion never replaces parameters, so
``lm_head.weight is embed_tokens.weight`` holds after quantization (and presets disable
``*lm_head*`` as ModelOpt's do).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
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

_LOCK = threading.Lock()
_INTERFACE = "ALL_ATTENTION_FUNCTIONS"


class _KVQuantInterface:
    """Pass-through stand-in for a modeling module's ``ALL_ATTENTION_FUNCTIONS``.

    ``get_interface`` returns the chosen attention function wrapped so that a
    `QuantHFAttention` caller's key/value go through its quantizers first; any other caller
    (a float model of the same family) gets the function unchanged. Everything else is
    forwarded to the original table.
    """

    def __init__(self, original: Any) -> None:
        self._original = original

    def get_interface(self, name: str, default: Callable[..., Any]) -> Callable[..., Any]:
        fn = self._original.get_interface(name, default)

        def quantized(module: nn.Module, q: Any, k: Any, v: Any, *args: Any, **kw: Any) -> Any:
            if isinstance(module, QuantHFAttention):
                k = module.k_bmm_quantizer(k)
                v = module.v_bmm_quantizer(v)
            return fn(module, q, k, v, *args, **kw)

        return quantized

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    def __getitem__(self, key: str) -> Any:
        return self._original[key]

    def __contains__(self, key: object) -> bool:
        return key in self._original


def _install_interface(modeling: Any) -> None:
    """Put the pass-through table into ``modeling`` once (idempotent, thread-safe).

    It stays installed: swapping the table around each forward instead would hide the
    quantizers from ``torch.compile`` (Dynamo reads the global when it traces, so compiled
    attention would run with float key/value) and needs a lock Dynamo cannot enter.
    """
    with _LOCK:
        current = getattr(modeling, _INTERFACE)
        if not isinstance(current, _KVQuantInterface):
            setattr(modeling, _INTERFACE, _KVQuantInterface(current))


class QuantHFAttention(QuantModule):
    """HF attention with ``k_bmm_quantizer``/``v_bmm_quantizer`` on the attention inputs."""

    def _setup(self, **kwargs: Any) -> None:
        super()._setup(**kwargs)
        for attr in ("k_bmm_quantizer", "v_bmm_quantizer"):
            q = TensorQuantizer({"num_bits": (4, 3)})
            q.disable()
            setattr(self, attr, q)
        _install_interface(sys.modules[self.original_cls.__module__])


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
