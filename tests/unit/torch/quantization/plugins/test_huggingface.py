"""HF plugin: tiny LlamaForCausalLM from a config (presets, KV-cache quantizers, tied weights)."""

from __future__ import annotations

import copy

import pytest
import torch

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.nn import QuantModule

transformers = pytest.importorskip("transformers")
modeling_llama = pytest.importorskip("transformers.models.llama.modeling_llama")

pytestmark = pytest.mark.hf

NEEDS_CORE: set[str] = set()  # see test_model_quant.py
BUILT = [
    n
    for n, c in mtq.PRESETS.items()
    if n not in NEEDS_CORE
    and mtq.calibration_algorithms.is_built(mtq.QuantizeConfig.parse(c).algorithm.method)
]


def _tiny_llama(tie: bool = True) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _loop(batches):
    def loop(model):
        for ids in batches:
            model(input_ids=ids)

    return loop


def _ids(n: int = 2, t: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 96, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", BUILT)
def test_each_built_preset_on_tiny_llama(name):
    model = _tiny_llama()
    ref = copy.deepcopy(model)
    mtq.quantize(model, mtq.PRESETS[name], _loop([_ids(seed=2)]))
    ids = _ids(seed=4)
    with torch.no_grad():
        logits, float_logits = model(input_ids=ids).logits, ref(input_ids=ids).logits
    assert torch.isfinite(logits).all()
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tie intact
    assert not model.lm_head.weight_quantizer.is_enabled  # *lm_head* disabled
    layer = model.model.layers[0]
    kv = name in ("FP8_KV_CFG", "NVFP4_KV_CFG")
    assert layer.self_attn.k_bmm_quantizer.is_enabled == kv
    assert layer.self_attn.v_bmm_quantizer.is_enabled == kv
    mlp_only = "MLP" in name
    assert layer.mlp.down_proj.weight_quantizer.is_enabled != kv
    assert layer.self_attn.q_proj.weight_quantizer.is_enabled == (not kv and not mlp_only)
    rel = (logits - float_logits).norm() / float_logits.norm()
    assert 0 < rel < 0.5, f"{name}: relative logit error {rel:.3f}"


def test_kv_cache_quantizers_calibrate_and_quantize_post_rope_keys(monkeypatch):
    # Layer 0 sees the embeddings, so its float keys are the same with or without KV quant.
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = modeling_llama.eager_attention_forward

    def recording(module, q, k, v, *args, **kwargs):
        if module is model.model.layers[0].self_attn:
            seen.append((k.detach().clone(), v.detach().clone()))
        return original(module, q, k, v, *args, **kwargs)

    monkeypatch.setattr(modeling_llama, "eager_attention_forward", recording)
    model = _tiny_llama()
    ids_cal, ids = _ids(seed=5), _ids(seed=6)
    with torch.no_grad():
        model(input_ids=ids_cal)  # float keys/values of the calibration batch
        model(input_ids=ids)  # float keys/values of the evaluation batch
    (k_cal, v_cal), (k_float, v_float) = seen
    seen.clear()
    mtq.quantize(model, mtq.FP8_KV_CFG, _loop([ids_cal]))
    attn = model.model.layers[0].self_attn
    assert isinstance(attn, QuantModule)
    torch.testing.assert_close(attn.k_bmm_quantizer.amax, k_cal.abs().amax(), rtol=0, atol=0)
    torch.testing.assert_close(attn.v_bmm_quantizer.amax, v_cal.abs().amax(), rtol=0, atol=0)
    seen.clear()
    with torch.no_grad():
        model(input_ids=ids)
    ((k_q, v_q),) = seen

    def fp8_ref(x, amax):
        scale = torch.div(torch.tensor(448.0), amax)  # IEEE division
        y = torch.clamp(x * scale, -448.0, 448.0).to(torch.float8_e4m3fn).float()
        return y * (1.0 / scale)

    torch.testing.assert_close(k_q, fp8_ref(k_float, k_cal.abs().amax()), rtol=0, atol=0)
    torch.testing.assert_close(v_q, fp8_ref(v_float, v_cal.abs().amax()), rtol=0, atol=0)
    assert not torch.equal(k_q, k_float)
    # The modeling module's table now passes through to the global one for everything else.
    table = transformers.modeling_utils.ALL_ATTENTION_FUNCTIONS
    assert modeling_llama.ALL_ATTENTION_FUNCTIONS["sdpa"] is table["sdpa"]
    assert "sdpa" in modeling_llama.ALL_ATTENTION_FUNCTIONS


def test_float_model_of_the_same_family_is_unaffected():
    ids = _ids(seed=8)
    with torch.no_grad():
        before = _tiny_llama()(input_ids=ids).logits
    quantized = _tiny_llama()
    mtq.quantize(quantized, mtq.FP8_KV_CFG, _loop([_ids(seed=9)]))  # installs the table
    with torch.no_grad():
        after = _tiny_llama()(input_ids=ids).logits
        kv_quant = quantized(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert not torch.equal(kv_quant, before)


def test_kv_preset_merged_into_fp8_preset():
    cfg = mtq.get_preset("FP8_DEFAULT_CFG")
    cfg["quant_cfg"] += mtq.get_preset("FP8_KV_CFG")["quant_cfg"]
    model = _tiny_llama()
    mtq.quantize(model, cfg, _loop([_ids(seed=7)]))
    attn = model.model.layers[0].self_attn
    assert attn.k_bmm_quantizer.is_enabled
    assert attn.q_proj.weight_quantizer.is_enabled  # "default" did not wipe earlier entries
    assert attn.q_proj.input_quantizer.amax is not None


def test_tied_embeddings_stay_tied_through_quantize_save_and_export():
    model = _tiny_llama(tie=True)
    mtq.quantize(model, mtq.INT8_WEIGHT_ONLY_CFG, None)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    mtq.enable_quantizer(model, "*lm_head.weight_quantizer")
    mtq.calibrate(model, "max", None)
    with pytest.warns(UserWarning, match="lm_head"):
        mtq.fold_weight(model)  # shared weight: not folded
    assert model.lm_head.weight_quantizer.is_enabled
    emb = model.model.embed_tokens.weight.detach().clone()
    state = model.state_dict()
    assert "lm_head.weight_quantizer._amax" in state
    fresh = _tiny_llama(tie=True)
    cfg = mtq.get_preset("INT8_WEIGHT_ONLY_CFG")
    cfg["algorithm"] = None
    mtq.quantize(fresh, cfg)
    mtq.enable_quantizer(fresh, "*lm_head.weight_quantizer")
    fresh.load_state_dict(state)
    ids = _ids(seed=8)
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, model(input_ids=ids).logits)
    torch.testing.assert_close(model.model.embed_tokens.weight, emb, rtol=0, atol=0)
    for m in list(model.modules()):
        if isinstance(m, QuantModule):
            m.export()
    assert type(model.lm_head) is torch.nn.Linear
    assert model.lm_head.weight is model.model.embed_tokens.weight


UNBUILT = [n for n in mtq.PRESETS if n not in BUILT and n not in NEEDS_CORE]


@pytest.mark.parametrize("name", UNBUILT)
def test_unbuilt_presets_leave_tiny_llama_unchanged(name):
    model = _tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    with pytest.raises(NotImplementedError, match="not implemented yet"):
        mtq.quantize(model, mtq.PRESETS[name], _loop([_ids()]))
    assert [type(m) for m in model.modules()] == types
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
