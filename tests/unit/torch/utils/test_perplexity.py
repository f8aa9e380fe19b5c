import math

import pytest
import torch
from torch import nn

from modeloptim.torch.utils.perplexity import perplexity, token_windows


class _Out:
    def __init__(self, logits):
        self.logits = logits


class FixedLM(nn.Module):
    """Predicts the same distribution at every position: perplexity is known in closed form."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.logp = nn.Parameter(probs.log(), requires_grad=False)

    def forward(self, input_ids):
        b, t = input_ids.shape
        return _Out(self.logp.expand(b, t, -1).clone())


class CharTokenizer:
    def __call__(self, text, return_tensors="pt", add_special_tokens=False):
        return {"input_ids": torch.tensor([[ord(c) % 4 for c in text]])}


def test_perplexity_matches_closed_form():
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    windows = torch.tensor([[0, 1, 2, 3, 0], [1, 1, 0, 3, 2]])
    targets = windows[:, 1:].reshape(-1)
    expected = math.exp(-probs.log()[targets].mean().item())
    got = perplexity(FixedLM(probs.float()), windows, batch_size=1)
    assert got == pytest.approx(expected, rel=1e-5)
    assert perplexity(FixedLM(probs.float()), windows, batch_size=2) == pytest.approx(got, rel=1e-6)


def test_token_windows_shapes_and_errors():
    tok = CharTokenizer()
    w = token_windows(tok, "abcdefghij" * 10, seq_len=7)
    assert w.shape == (100 // 7, 7)
    assert w.dtype == torch.long
    assert token_windows(tok, "abcdefghij" * 10, seq_len=7, max_windows=3).shape == (3, 7)
    with pytest.raises(ValueError, match="seq_len"):
        token_windows(tok, "abc", seq_len=1)
    with pytest.raises(ValueError, match="fewer than one window"):
        token_windows(tok, "abc", seq_len=16)
    with pytest.raises(ValueError, match="windows"):
        perplexity(FixedLM(torch.ones(4) / 4), torch.zeros(3), 1)
