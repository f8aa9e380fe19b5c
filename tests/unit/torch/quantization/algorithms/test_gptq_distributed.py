"""Sequential GPTQ with 2 gloo ranks equals one process calibrating on the union of the data."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq

from ._gloo import run_two_ranks


class Residual(nn.Module):
    """A pre-norm MLP block with its residual add inside (as in HF decoder layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 32))

    def forward(self, x):
        return x + self.mlp(x)


class Chain(nn.Module):
    """Repeated blocks (found by the block finder) and a quantized head after them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(Residual() for _ in range(3))
        self.head = nn.Linear(32, 8)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def _data() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(40, 32, generator=g) for _ in range(4)]


def _quantize(batches: list[torch.Tensor], preset: str) -> dict[str, torch.Tensor]:
    model = Chain()
    cfg = copy.deepcopy(getattr(mtq, preset))
    cfg["algorithm"] = {"method": "gptq"}

    def loop(m):
        for b in batches:
            m(b)

    mtq.quantize(model, cfg, loop)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


PRESETS = ["INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "NVFP4_DEFAULT_CFG"]


def _worker(rank: int, out: dict) -> None:
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logging.getLogger("modeloptim").addHandler(handler)
    shard = _data()[rank::2]  # each rank sees half of the batches
    out[rank] = {p: _quantize(shard, p) for p in PRESETS}
    out[f"log{rank}"] = records


@pytest.mark.slow
def test_sequential_gptq_two_gloo_ranks_equal_single_process_union():
    out = run_two_ranks(_worker)
    assert out["log0"] == []  # no fallback to one pass
    assert out["log1"] == []
    union = _data()[0::2] + _data()[1::2]
    for p in PRESETS:
        single = _quantize(union, p)
        r0, r1 = out[0][p], out[1][p]
        assert set(r0) == set(single)
        for k in r0:
            torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=f"{p} {k}")
            torch.testing.assert_close(r0[k], single[k], rtol=1e-5, atol=1e-6, msg=f"{p} {k}")
