"""Tiny transformers-5 MoE models (random weights, from configs) for the hf_moe tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn


def qwen2_moe(num_experts: int = 8, top_k: int = 2, seed: int = 0, layers: int = 2) -> nn.Module:
    """Qwen2-MoE with hidden 64, ``num_experts`` experts of width 32 and a shared expert."""
    import transformers

    cfg = transformers.Qwen2MoeConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=num_experts,
        num_experts_per_tok=top_k,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(seed)
    return transformers.Qwen2MoeForCausalLM(cfg).eval()


def family_model(family: str, seed: int = 0) -> nn.Module:
    """One tiny model per MoE family (hidden 32, 4 experts, top-2)."""
    import transformers

    common = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    cfgs: dict[str, Callable[[], object]] = {
        "qwen2_moe": lambda: transformers.Qwen2MoeConfig(
            **common,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=32,
            num_experts=4,
            num_experts_per_tok=2,
        ),
        "qwen3_moe": lambda: transformers.Qwen3MoeConfig(
            **common, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2
        ),
        "mixtral": lambda: transformers.MixtralConfig(
            **common, num_local_experts=4, num_experts_per_tok=2
        ),
        "olmoe": lambda: transformers.OlmoeConfig(**common, num_experts=4, num_experts_per_tok=2),
        # transposed [E, in, out] weights, biases, interleaved gate/up, clamped SwiGLU
        "gpt_oss": lambda: transformers.GptOssConfig(
            **common, num_local_experts=4, num_experts_per_tok=2, head_dim=8
        ),
    }
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfgs[family]())
    with torch.no_grad():  # some families initialise biases/weights to zero or leave them empty
        for name, p in model.named_parameters():
            if "experts" in name:
                p.normal_(0, 0.1)
    return model.eval()


def token_batches(n: int, seq: int, seed: int, vocab: int = 128) -> list[torch.Tensor]:
    """``n`` batches of shape ``[2, seq]`` of random token ids."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (2, seq), generator=g) for _ in range(n)]


def lm_loop(batches: list[torch.Tensor]) -> Callable[[nn.Module], None]:
    """forward_loop running the model on every batch."""

    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for ids in batches:
                model(input_ids=ids)

    return loop


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The model's logits for token ids ``ids`` ``[batch, seq]`` (no grad)."""
    with torch.no_grad():
        return model(input_ids=ids).logits


def safetensors_in(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the ``*.safetensors`` files in ``folder``, by name."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def experts_of(model: nn.Module) -> list[nn.Module]:
    """The 3-D experts modules of ``model`` in module order."""
    return [m for n, m in model.named_modules() if n.endswith("experts")]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core runner: extra threads only add contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def with_outliers(model: nn.Module, channels: tuple[int, ...] = (3, 17, 40)) -> nn.Module:
    """Scale a few channels of every RMSNorm by 25 (activation outliers, as in trained LLMs)."""
    with torch.no_grad():
        for layer in model.model.layers:  # type: ignore[union-attr]
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[list(channels)] *= 25.0
    return model
