"""Block finder and replayer used by sequential GPTQ (blocks.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modeloptim.torch.quantization.algorithms.blocks import (
    BlockInputCapture,
    BlockReplayer,
    find_block_list,
)


class FakeCache:
    """Duck-typed KV cache: replaying a block with it would append keys again."""

    def __init__(self, filled: int = 0) -> None:
        self.filled = filled
        self.updates = 0

    def update(self, k, v, layer_idx):
        self.updates += 1
        return k, v

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.filled


class Expert(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.up = nn.Linear(d, d)

    def forward(self, x):
        return self.up(x)


class Block(nn.Module):
    """Takes the hidden state as a keyword, a shared scale tensor, and a cache object."""

    def __init__(self, d: int = 8, experts: int = 3) -> None:
        super().__init__()
        self.attn = nn.Linear(d, d)
        self.experts = nn.ModuleList(Expert(d) for _ in range(experts))

    def forward(self, *, hidden_states, scale, cache=None):
        if cache is not None:
            cache.update(hidden_states, hidden_states, 0)
        h = hidden_states + torch.tanh(self.attn(hidden_states)) * scale
        return (h + sum(e(h) for e in self.experts) / len(self.experts), "extra")


class Net(nn.Module):
    def __init__(self, n: int = 3, d: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(d, d)
        self.layers = nn.ModuleList(Block(d) for _ in range(n))
        self.mixed = nn.ModuleList([nn.Linear(d, d), nn.ReLU()])  # not same-type: never chosen

    def forward(self, x, cache=None):
        h = self.inp(x)
        scale = torch.linspace(0.5, 1.5, x.shape[-1])
        for layer in self.layers:
            h = layer(hidden_states=h, scale=scale, cache=cache)[0]
        return self.mixed[1](self.mixed[0](h))


def _quantized(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_finds_outer_list_not_the_expert_lists():
    model = Net()
    found = find_block_list(model, _quantized(model))
    assert not isinstance(found, str)
    assert found.name == "layers"
    assert found.blocks == tuple(model.layers)
    assert found.index_of(model.layers[2].experts[1].up) == 2
    assert found.index_of(model.inp) is None


def test_no_list_gives_a_reason():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    assert "no nn.ModuleList" in find_block_list(model, _quantized(model))


def test_replay_reproduces_every_block_output_and_drops_the_cache():
    model = Net()
    xs = [torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    outs: dict[int, list[torch.Tensor]] = {k: [] for k in range(3)}
    hooks = [
        b.register_forward_hook(lambda _m, _a, o, k=k: outs[k].append(o[0].clone()))
        for k, b in enumerate(model.layers)
    ]
    found = find_block_list(model, _quantized(model))
    cache = FakeCache()
    with BlockInputCapture(found) as cap, torch.no_grad():
        for x in xs:
            model(x, cache=cache)
    for h in hooks:
        h.remove()
    assert cap.problem is None
    assert cache.updates == 3 * len(xs)
    rep = BlockReplayer(cap)
    for k in range(3):
        got: list[torch.Tensor] = []
        rep.run_block(k, on_output=lambda o, got=got: got.append(o[0]))
        for a, b in zip(got, outs[k], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        rep.advance(k)
    assert cache.updates == 3 * len(xs)  # replays ran without the cache
    with pytest.raises(RuntimeError, match="in order"):
        rep.run_block(0)


def test_filled_cache_is_refused():
    model = Net()
    with BlockInputCapture(find_block_list(model, _quantized(model))) as cap, torch.no_grad():
        model(torch.randn(1, 4, 8), cache=FakeCache(filled=3))
    assert "already filled KV cache" in cap.problem
    with pytest.raises(ValueError, match="capture"):
        BlockReplayer(cap)


def test_block_called_twice_is_refused():
    class Twice(Net):
        def forward(self, x, cache=None):
            h = self.inp(x)
            s = torch.ones(x.shape[-1])
            for layer in [*self.layers, self.layers[1]]:
                h = layer(hidden_states=h, scale=s)[0]
            return h

    model = Twice()
    with BlockInputCapture(find_block_list(model, _quantized(model))) as cap, torch.no_grad():
        model(torch.randn(1, 4, 8))
    assert "block 1" in (cap.problem or "")
