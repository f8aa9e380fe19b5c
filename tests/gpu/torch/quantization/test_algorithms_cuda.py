"""Calibration algorithms on a CUDA model: same decisions as on CPU (tiny LLaMA)."""

from __future__ import annotations

import copy

import pytest
import torch

import modeloptim.torch.quantization as mtq

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)


def _llama():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _cfg(preset, algorithm, block=None):
    cfg = copy.deepcopy(getattr(mtq, preset))
    if block:
        cfg["quant_cfg"][0]["cfg"]["block_sizes"] = {-1: block, "type": "static"}
    cfg["algorithm"] = algorithm
    return cfg


CASES = [
    ("INT4_AWQ_CFG", {"method": "awq_lite"}, 16),
    ("INT4_AWQ_CFG", {"method": "awq_full", "clip_steps": 4}, 16),
    ("INT4_AWQ_CFG", {"method": "gptq"}, 16),
    ("NVFP4_DEFAULT_CFG", {"method": "gptq"}, None),
    ("INT8_SMOOTHQUANT_CFG", {"method": "smoothquant"}, None),
    ("W4A8_AWQ_BETA_CFG", {"method": "awq_lite"}, None),
]


@pytest.mark.parametrize(("preset", "algorithm", "block"), CASES)
def test_cuda_matches_cpu(preset, algorithm, block):
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 128, (2, 32), generator=g) for _ in range(3)]
    base = _llama()
    cpu = mtq.quantize(
        copy.deepcopy(base),
        _cfg(preset, algorithm, block),
        lambda m: [m(input_ids=b) for b in data],
    )
    gpu = mtq.quantize(
        copy.deepcopy(base).cuda(),
        _cfg(preset, algorithm, block),
        lambda m: [m(input_ids=b.cuda()) for b in data],
    )
    with torch.no_grad():
        lc = cpu(input_ids=data[0], labels=data[0]).loss.item()
        lg = gpu(input_ids=data[0].cuda(), labels=data[0].cuda()).loss.item()
    assert abs(lc - lg) < 0.02 * abs(lc)
