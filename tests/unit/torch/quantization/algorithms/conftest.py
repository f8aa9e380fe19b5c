"""Tiny models shared by the algorithm tests (random weights, built from configs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class OddRMS(nn.Module):
    """An RMS norm that is not any library's class."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.scale_vec = nn.Parameter(torch.ones(d))
        self.weight = self.scale_vec

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class WeirdNet(nn.Module):
    """Fan-out with unusual names: no 'q_proj', 'gate', 'mlp' anywhere."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.zz_norm = nn.LayerNorm(d)
        self.alpha = nn.Linear(d, 32)
        self.beta = nn.Linear(d, 32)
        self.gamma = nn.Linear(d, 8, bias=False)
        self.omega = nn.Linear(32, d)
        self.hub = OddRMS(d)
        self.spoke_a = nn.Linear(d, d)
        self.spoke_b = nn.Linear(d, d)
        self.side = nn.LayerNorm(d)
        self.tail = nn.Linear(d, d)

    def forward(self, x):
        h = self.zz_norm(x)
        y = self.omega(torch.relu(self.alpha(h)) * self.beta(h)) + self.gamma(h).sum(-1, True)
        x = x + y
        g = self.hub(x)
        x = x + self.spoke_a(g) * self.spoke_b(g)
        s = self.side(x)
        return self.tail(s) + s  # side's output is also read by the residual add


@pytest.fixture
def weird_net():
    torch.manual_seed(0)
    m = WeirdNet()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture
def tiny_llama():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture
def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def token_batches(n: int = 4, seq: int = 16, vocab: int = 128, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (2, seq), generator=g) for _ in range(n)]


def lm_loop(batches):
    def loop(model):
        for b in batches:
            model(input_ids=b)

    return loop
