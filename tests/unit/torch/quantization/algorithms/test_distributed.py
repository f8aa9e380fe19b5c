"""Data-parallel calibration with 2 gloo processes equals single-process calibration."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq

from ._gloo import run_two_ranks


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.LayerNorm(16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.Linear(16, 8)
    )


def _data() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    scale = torch.ones(16)
    scale[3] = 25.0
    return [torch.randn(6, 16, generator=g) * scale for _ in range(4)]


def _cfg(name: str):
    cfg = copy.deepcopy(getattr(mtq, name.split(":")[0]))
    if ":" in name:
        cfg["algorithm"] = {"method": name.split(":")[1]}
    if name.startswith("INT8_DEFAULT_CFG:hist"):
        cfg["algorithm"] = "max"
        cfg["quant_cfg"].append(
            {
                "quantizer_name": "*input_quantizer",
                "cfg": {"num_bits": 8, "calibrator": {"method": "histogram"}},
            }
        )
    return cfg


CASES = [
    "INT8_DEFAULT_CFG",
    "INT8_SMOOTHQUANT_CFG",
    "INT4_AWQ_CFG:awq_full",
    "INT4_BLOCKWISE_WEIGHT_ONLY_CFG:gptq",
]


def _quantize(name: str, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    model = _model()
    cfg = _cfg(name)
    if cfg["algorithm"] in ({"method": "awq_full"},):
        cfg["algorithm"] = {"method": "awq_full", "max_tokens": 64, "clip_max_tokens": 64}

    def loop(m):
        for b in batches:
            m(b)

    mtq.quantize(model, cfg, loop)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, out: dict) -> None:
    shard = _data()[rank::2]  # each rank sees half of the batches
    out[rank] = {name: _quantize(name, shard) for name in CASES}


@pytest.mark.slow
def test_two_gloo_ranks_equal_single_process_union():
    out = run_two_ranks(_worker)
    single = {name: _quantize(name, _data()[0::2] + _data()[1::2]) for name in CASES}
    for name in CASES:
        r0, r1 = out[0][name], out[1][name]
        assert set(r0) == set(single[name])
        for k in r0:
            # every rank ends with identical quantizers and weights ...
            torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=f"{name} {k}")
            # ... equal to one process calibrating on the union of the data
            torch.testing.assert_close(
                r0[k], single[name][k], rtol=1e-5, atol=1e-6, msg=f"{name} {k}"
            )
