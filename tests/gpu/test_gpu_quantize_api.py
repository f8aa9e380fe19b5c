"""mtq.quantize on CUDA models: same results as on the CPU, quantizer state on the GPU."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

mtq = pytest.importorskip("modeloptim.torch.quantization")

PRESETS = [
    "INT8_DEFAULT_CFG",
    "INT8_WEIGHT_ONLY_CFG",
    "FP8_DEFAULT_CFG",
    "FP8_PER_CHANNEL_PER_TOKEN_CFG",
    "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    "NVFP4_DEFAULT_CFG",
    "MXFP8_DEFAULT_CFG",
    "W4A8_NVFP4_FP8_CFG",
]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 384), nn.GELU(), nn.Linear(384, 128))


@pytest.mark.parametrize("name", PRESETS)
def test_cuda_matches_cpu(name):
    torch.backends.cuda.matmul.allow_tf32 = False
    cpu = _mlp()
    gpu = copy.deepcopy(cpu).cuda()
    batches = [torch.randn(32, 256) for _ in range(2)]
    mtq.quantize(cpu, name, lambda m: [m(b) for b in batches])
    mtq.quantize(gpu, name, lambda m: [m(b.cuda()) for b in batches])
    for (name, qc), (_, qg) in zip(
        mtq.conversion.named_tensor_quantizers(cpu),
        mtq.conversion.named_tensor_quantizers(gpu),
        strict=True,
    ):
        assert qc.is_enabled == qg.is_enabled
        if qc.amax is not None:
            assert qg.amax.is_cuda
            # weights and the model input are the same bits on both devices: exact amax; the
            # second layer's input comes out of a matmul, whose float32 summation order (and
            # so the last bit) differs between CPU and cuBLAS
            exact = name.endswith("weight_quantizer") or name.startswith("0.")
            tol = 0.0 if exact else 1e-6
            torch.testing.assert_close(qg.amax.cpu(), qc.amax, rtol=tol, atol=0)
    x = torch.randn(8, 256)
    with torch.no_grad(), mtq.cache_quantized_weights(gpu):
        out_gpu = gpu(x.cuda()).cpu()
    torch.testing.assert_close(out_gpu, cpu(x).detach(), rtol=1e-4, atol=1e-4)


def test_cuda_tiny_llama_fp8_with_kv_cache():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).cuda().eval()
    ref = copy.deepcopy(model)
    quant_cfg = mtq.get_preset("FP8_DEFAULT_CFG")
    quant_cfg["quant_cfg"] += mtq.get_preset("FP8_KV_CFG")["quant_cfg"]
    ids = torch.randint(0, 128, (2, 16), device="cuda")
    mtq.quantize(model, quant_cfg, lambda m: m(input_ids=ids))
    attn = model.model.layers[0].self_attn
    assert attn.k_bmm_quantizer.amax.is_cuda
    with torch.no_grad():
        out = model(input_ids=ids).logits
        base = ref(input_ids=ids).logits
    rel = (out - base).norm() / base.norm()
    assert 0 < rel < 0.2
    assert model.lm_head.weight is model.model.embed_tokens.weight
