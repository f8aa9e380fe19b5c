"""Sequential GPTQ: each Hessian comes from the activations of the already quantized model."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.algorithms import gptq as gptq_mod

from .conftest import lm_loop, token_batches


def _cfg(preset="INT4_BLOCKWISE_WEIGHT_ONLY_CFG", **algo):
    cfg = copy.deepcopy(getattr(mtq, preset))
    if preset == "INT4_BLOCKWISE_WEIGHT_ONLY_CFG":
        cfg["quant_cfg"][0]["cfg"]["block_sizes"] = {-1: 16, "type": "static"}
    cfg["algorithm"] = {"method": "gptq", **algo}
    return cfg


def _spy_hessians(monkeypatch) -> dict[int, torch.Tensor]:
    """Record the Hessian every layer is rounded with (keyed by id of the layer)."""
    seen: dict[int, torch.Tensor] = {}
    real = gptq_mod._quantize_layer

    def spy(m, h, cfg):
        seen[id(m)] = h.detach().double().clone()
        real(m, h, cfg)

    monkeypatch.setattr(gptq_mod, "_quantize_layer", spy)
    return seen


def _hessians_by_hand(model, batches, layers) -> dict[int, torch.Tensor]:
    """2 X^T X / n in float64 from the inputs each layer sees when ``model`` runs."""
    xs: dict[int, list[torch.Tensor]] = {id(m): [] for m in layers}
    hs = [
        m.register_forward_pre_hook(
            lambda m, a: xs[id(m)].append(a[0].detach().reshape(-1, a[0].shape[-1]).double())
        )
        for m in layers
    ]
    with torch.no_grad():
        lm_loop(batches)(model)
    for h in hs:
        h.remove()
    out = {}
    for k, v in xs.items():
        x = torch.cat(v)
        out[k] = 2.0 * x.T @ x / x.shape[0]
    return out


def _linears(model):
    return [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in n]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("preset", ["INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "NVFP4_DEFAULT_CFG"])
def test_sequential_hessians_equal_quantized_model_activations(tiny_llama, monkeypatch, preset):
    batches = token_batches(4, seq=32)
    fp = copy.deepcopy(tiny_llama)
    seen = _spy_hessians(monkeypatch)
    mtq.quantize(tiny_llama, _cfg(preset), lm_loop(batches))
    layers = _linears(tiny_llama)
    assert len(layers) == 14
    assert {id(m) for m in layers} <= set(seen)
    # True sequential: a layer's input depends only on layers that ran before it, all already
    # rounded when its Hessian was taken, so the final quantized model reproduces every one.
    ref = _hessians_by_hand(tiny_llama, batches, layers)
    for m in layers:
        torch.testing.assert_close(seen[id(m)], ref[id(m)], rtol=1e-5, atol=1e-5)
    # ... and they are not the full-precision model's Hessians (block 1 differs visibly).
    fp_layers = {id(a): b for a, b in zip(layers, _linears(fp), strict=True)}
    ref_fp = _hessians_by_hand(fp, batches, list(fp_layers.values()))
    last = layers[-1]  # block 1's down projection
    assert _rel(seen[id(last)], ref_fp[id(fp_layers[id(last)])]) > 1e-3


def test_later_groups_stop_the_block_early(tiny_llama):
    """After the first group's pass, each group's pass ends a block call once it has run."""
    batches = token_batches(3, seq=32)
    started, finished = [0], [0]
    for blk in tiny_llama.model.layers:
        blk.register_forward_pre_hook(lambda *_: started.__setitem__(0, started[0] + 1))
        blk.register_forward_hook(lambda *_: finished.__setitem__(0, finished[0] + 1))
    mtq.quantize(tiny_llama, _cfg(), lm_loop(batches))
    # 2 blocks x 3 later groups (o_proj, gate/up, down_proj) x 3 batches stopped early
    assert started[0] - finished[0] == 2 * 3 * 3


def test_block_sequential_first_group_of_each_block(tiny_llama, monkeypatch):
    """true_sequential=False: the first group of block k still reads quantized blocks < k."""
    batches = token_batches(3, seq=32)
    seen = _spy_hessians(monkeypatch)
    mtq.quantize(tiny_llama, _cfg(true_sequential=False), lm_loop(batches))
    firsts = [blk.self_attn.q_proj for blk in tiny_llama.model.layers]
    ref = _hessians_by_hand(tiny_llama, batches, firsts)
    for m in firsts:
        torch.testing.assert_close(seen[id(m)], ref[id(m)], rtol=1e-5, atol=1e-5)
    # the block's later groups saw the block's own float weights, not the rounded ones
    down = tiny_llama.model.layers[0].mlp.down_proj
    ref_down = _hessians_by_hand(tiny_llama, batches, [down])[id(down)]
    assert _rel(seen[id(down)], ref_down) > 1e-4


def test_one_pass_uses_full_precision_hessians(tiny_llama, monkeypatch):
    batches = token_batches(3, seq=32)
    layers_fp = _linears(tiny_llama)
    ref = _hessians_by_hand(tiny_llama, batches, layers_fp)
    seen = _spy_hessians(monkeypatch)
    mtq.quantize(tiny_llama, _cfg(sequential=False), lm_loop(batches))
    for m in layers_fp:
        torch.testing.assert_close(seen[id(m)], ref[id(m)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sequential", [True, False])
def test_sequential_deterministic(tiny_llama, sequential):
    batches = token_batches(2, seq=32)
    states = []
    for _ in range(2):
        m = copy.deepcopy(tiny_llama)
        mtq.quantize(m, _cfg(sequential=sequential), lm_loop(batches))
        states.append(m.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=0, atol=0, msg=k)


class Branches(nn.Module):
    """A ModuleList of same-type blocks applied side by side: not a chain."""

    def __init__(self, shared: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = shared
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.GELU()) for _ in range(3))
        self.head = nn.Linear(32, 8)

    def forward(self, x):
        if self.shared:  # every block reads x: one shared-input group across blocks
            return self.head(sum(b(x) for b in self.blocks))
        return self.head(sum(b(x * (i + 1)) for i, b in enumerate(self.blocks)))


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 16))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_mlp, "no nn.ModuleList"),
        (Branches, "not one chain"),
        (lambda: Branches(shared=True), "lie in different blocks"),
    ],
)
def test_fallback_to_one_pass_is_logged_and_equal(make, reason, caplog):
    data = [torch.randn(64, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    results = []
    for seq in (True, False):
        model = make()
        with caplog.at_level(logging.WARNING):
            mtq.quantize(model, _cfg(sequential=seq), lambda m: [m(x) for x in data])
        results.append(model.state_dict())
        if seq:
            assert any(reason in r.getMessage() for r in caplog.records)
            assert all("one pass" in r.getMessage() for r in caplog.records)
            caplog.clear()
    assert not caplog.records  # sequential=False does not warn
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=0, atol=0, msg=k)


class Chain(nn.Module):
    """Quantized layers before (``inp``) and after (``head``) a chain of blocks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(24, 32)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.Tanh()) for _ in range(3))
        self.head = nn.Linear(32, 8)

    def forward(self, x):
        x = self.inp(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


@pytest.mark.parametrize("preset", ["INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "NVFP4_DEFAULT_CFG"])
def test_layers_outside_the_blocks_get_quantized_model_hessians(monkeypatch, preset, caplog):
    model = Chain()
    data = [torch.randn(64, 24, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    seen = _spy_hessians(monkeypatch)
    with caplog.at_level(logging.WARNING):
        mtq.quantize(model, _cfg(preset), lambda m: [m(x) for x in data])
    assert not caplog.records  # processed block by block
    layers = [model.inp, *(b[0] for b in model.blocks), model.head]
    assert len(seen) == len(layers)
    xs: dict[int, list[torch.Tensor]] = {id(m): [] for m in layers}
    hs = [m.register_forward_pre_hook(lambda m, a: xs[id(m)].append(a[0].double())) for m in layers]
    with torch.no_grad():
        for x in data:
            model(x)
    for h in hs:
        h.remove()
    for m in layers:
        x = torch.cat(xs[id(m)])
        torch.testing.assert_close(seen[id(m)], 2 * x.T @ x / x.shape[0], rtol=1e-5, atol=1e-6)
