"""Compressed models on CUDA: packed INT4/NVFP4 linear layers run the W4A16 kernels."""

import copy

import pytest
import torch
from torch import nn

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.compress import compress
from modeloptim.torch.quantization.config import presets
from modeloptim.torch.quantization.model_quant import quantize

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _rel(y, ref):
    return ((y.double() - ref.double()).norm() / ref.double().norm()).item()


PRESETS = ["INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "INT4_AWQ_CFG", "NVFP4_DEFAULT_CFG", "W4A16_NVFP4_CFG"]


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("rows", [1, 2, 7, 100, 300])  # GEMV, tile kernel, dequant + cuBLAS
def test_compressed_model_matches_fake_quant_on_cuda(monkeypatch, name, rows):
    torch.manual_seed(rows)
    # one layer: with FP4 activations a second layer would amplify bf16-level differences of
    # the first one's output by re-quantizing it (an element near a rounding edge flips)
    model = nn.Sequential(nn.Linear(1024, 512)).cuda().bfloat16()
    data = [torch.randn(16, 1024, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    quantize(model, copy.deepcopy(getattr(presets, name)), lambda m: [m(x) for x in data])
    x = torch.randn(rows, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ref = model(x)
    compress(model)
    seen = []
    real = B.quantized_linear
    monkeypatch.setattr(
        B, "quantized_linear", lambda x, w, b=None, be=None: seen.append(w.format) or real(x, w, b)
    )
    with torch.no_grad():
        y = model(x)
    assert len(seen) == 1
    assert y.dtype == torch.bfloat16
    assert _rel(y, ref) < 1e-2  # bf16 rounding (fake quant rounds the dequantized weight)
