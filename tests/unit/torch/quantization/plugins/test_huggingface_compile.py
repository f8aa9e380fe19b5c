"""KV-cache quantized tiny Llama under ``torch.compile`` (CPU, Dynamo with the eager backend)."""

from __future__ import annotations

import pytest
import torch

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.conversion import named_tensor_quantizers

transformers = pytest.importorskip("transformers")
modeling_llama = pytest.importorskip("transformers.models.llama.modeling_llama")

pytestmark = pytest.mark.hf


def _kv_quantized_llama() -> tuple[torch.nn.Module, torch.Tensor]:
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(3))
    mtq.quantize(model, mtq.FP8_KV_CFG, lambda m: m(input_ids=ids))
    return model, ids


def _set_kv_quant(model: torch.nn.Module, on: bool) -> None:
    for name, q in named_tensor_quantizers(model):
        if name.endswith(("k_bmm_quantizer", "v_bmm_quantizer")):
            q.enable() if on else q.disable()


def test_compiled_kv_quantized_llama_matches_eager():
    model, ids = _kv_quantized_llama()
    table = modeling_llama.ALL_ATTENTION_FUNCTIONS
    torch._dynamo.reset()
    with torch.no_grad():
        want = model(input_ids=ids).logits
        got = torch.compile(model, backend="eager")(input_ids=ids).logits
        _set_kv_quant(model, False)
        float_kv = model(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert (float_kv - want).abs().max() > 1e-4  # the compiled run did quantize K/V
    assert modeling_llama.ALL_ATTENTION_FUNCTIONS is table  # the swap left nothing behind


def test_attention_table_swap_causes_no_graph_break():
    model, ids = _kv_quantized_llama()
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(input_ids=ids)
    where = [frame.filename for b in explained.break_reasons for frame in b.user_stack[-1:]]
    assert not [f for f in where if f.endswith("plugins/huggingface.py")], where
