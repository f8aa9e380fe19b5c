"""FLOPs/params counting against hand counts and torch's own flop counter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modeloptim.torch.utils.profile import count_flops, count_params, profile_model


def test_linear_hand_count() -> None:
    m = nn.Linear(7, 5)
    assert count_flops(m, torch.randn(3, 7)) == 2 * 3 * 7 * 5
    assert count_flops(m, torch.randn(2, 4, 7)) == 2 * 8 * 7 * 5  # 3-D input: batched rows
    assert count_params(m) == 7 * 5 + 5


@pytest.mark.parametrize(("groups", "stride"), [(1, 1), (2, 2), (8, 1)])
def test_conv_hand_count(groups: int, stride: int) -> None:
    m = nn.Conv2d(8, 16, 3, stride=stride, padding=1, groups=groups)
    x = torch.randn(2, 8, 10, 10)
    ho = (10 + 2 - 3) // stride + 1
    macs = 2 * 16 * ho * ho * (8 // groups) * 9
    assert count_flops(m, x) == 2 * macs


def test_conv_transpose_hand_count() -> None:
    m = nn.ConvTranspose2d(4, 6, 2, stride=2)
    x = torch.randn(1, 4, 5, 5)
    assert count_flops(m, x) == 2 * (4 * 25) * 6 * 4  # each input pixel feeds 6*2*2 outputs


def test_attention_and_matmul_hand_count() -> None:
    class M(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.scaled_dot_product_attention(q, q, q) @ q.transpose(-1, -2)

    q = torch.randn(2, 3, 5, 4)  # B, H, L, E
    sdpa = 2 * 6 * 5 * 5 * (4 + 4)
    mm = 2 * 6 * 5 * 4 * 5
    assert count_flops(M(), q) == sdpa + mm


def test_matches_torch_flop_counter_on_cnn() -> None:
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 1),
        nn.Flatten(),
        nn.Linear(4 * 30 * 30, 10),
    )
    x = torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as ref:
        m(x)
    assert count_flops(m, x) == ref.get_total_flops()


def test_tied_params_count_once_and_mode_restored() -> None:
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    m = nn.Sequential(emb, head).train()
    out = profile_model(m, torch.randint(0, 10, (2, 3)))
    assert out == {"flops": 2 * 6 * 4 * 10, "params": 40}
    assert m.training


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="dummy_input"):
        count_flops(nn.Linear(2, 2), 3)
