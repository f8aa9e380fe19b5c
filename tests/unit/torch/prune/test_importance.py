"""Channel importance against hand computations, and gradnas end to end on a tiny BERT."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import modeloptim.torch.opt as mto
import modeloptim.torch.prune as mtp
from modeloptim.torch.prune.builders import build_space
from modeloptim.torch.prune.importance import channel_importance, keep_order
from modeloptim.torch.utils.profile import count_params


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _norm_rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    per = t.abs().double().transpose(0, dim).reshape(t.shape[dim], -1).sum(1)
    return per / per.mean()


def test_magnitude_matches_hand_formula() -> None:
    m = _mlp()
    space = build_space(m, torch.randn(1, 4))
    assert [g.size for g in space.groups] == [3]
    got = channel_importance(m, space, "magnitude")
    w1, b1, w2 = m[0].weight.detach(), m[0].bias.detach(), m[2].weight.detach()
    want = _norm_rows(w1, 0) + _norm_rows(b1, 0) + _norm_rows(w2, 1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_gradient_matches_hand_taylor_score() -> None:
    m = _mlp()
    space = build_space(m, torch.randn(1, 4))
    batches = [torch.randn(5, 4, generator=torch.Generator().manual_seed(i)) for i in range(2)]

    def loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return (model(x) ** 2).sum()

    got = channel_importance(m, space, "gradient", data_loader=batches, loss_func=loss)
    ref = copy.deepcopy(m).double()
    acc = [torch.zeros_like(p) for p in (ref[0].weight, ref[0].bias, ref[2].weight)]
    for x in batches:
        ref.zero_grad()
        loss(ref, x.double()).backward()
        for a, p in zip(acc, (ref[0].weight, ref[0].bias, ref[2].weight), strict=True):
            a += (p.detach() * p.grad).abs()
    want = _norm_rows(acc[0], 0) + _norm_rows(acc[1], 0) + _norm_rows(acc[2], 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
    assert m[0].weight.grad is None  # gradients cleared again


def test_keep_order_is_descending_and_stable() -> None:
    space = build_space(_mlp(), torch.randn(1, 4))
    order = keep_order(space, torch.tensor([1.0, 3.0, 1.0], dtype=torch.float64))
    assert order[space.groups[0].name].tolist() == [1, 0, 2]


def test_gradnas_on_tiny_bert(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=100,
        num_labels=3,
    )
    model = transformers.BertForSequenceClassification(cfg).eval()
    fresh = copy.deepcopy(model)
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    data = [(torch.randint(0, 100, (4, 8)), torch.randint(0, 3, (4,))) for _ in range(2)]

    def loss(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return m(input_ids=batch[0], labels=batch[1]).loss

    p0 = count_params(model)
    pruned, _ = mtp.prune(
        model,
        [("gradnas", {"channel_divisor": 1})],
        {"params": "85%"},
        {"input_ids": ids},
        {"data_loader": data, "loss_func": loss},
    )
    assert 0.80 * p0 <= count_params(pruned) <= 0.85 * p0
    with torch.no_grad():
        out = pruned(input_ids=ids).logits
    assert out.shape == (2, 3)
    mto.save(pruned, tmp_path / "b.pt")
    restored = mto.restore(fresh, tmp_path / "b.pt")
    with torch.no_grad():
        torch.testing.assert_close(restored(input_ids=ids).logits, out, rtol=0, atol=0)
