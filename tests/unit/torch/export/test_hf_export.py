"""export_hf_checkpoint (ModelOpt layout) -> load_hf_checkpoint round trips on a tiny Llama."""

import json
import math

import pytest
import torch
from safetensors import safe_open

from modeloptim.torch.export import export_hf_checkpoint, load_hf_checkpoint
from modeloptim.torch.quantization.compress import compress

from ._tiny import logits, preset, quantized, tiny_llama

pytestmark = pytest.mark.hf

# preset -> (quant_algo, storage bits per weight of an [out, in] layer). Every reload is
# bit-exact from the engine-facing scales alone (export snaps the rare inexpressible scale).
FORMATS = {
    "FP8_DEFAULT_CFG": ("FP8", lambda o, i: 8 + 32 / (o * i)),
    "NVFP4_DEFAULT_CFG": ("NVFP4", lambda o, i: 4.5 + 32 / (o * i)),
    # max calibration (the preset's awq_lite is swapped out here), block 128, f32 block scales
    "INT4_AWQ_CFG": ("W4A16_AWQ", lambda o, i: 4.25),
    # likewise; + the FP8 stage's float32 weight_scale_2
    "W4A8_AWQ_BETA_CFG": ("W4A8_AWQ", lambda o, i: 4.25 + 32 / (o * i)),
    # max calibration; float32 per-channel scales
    "INT8_SMOOTHQUANT_CFG": ("W8A8_SQ_PER_CHANNEL", lambda o, i: 8 + 32 / i),
    "MXFP8_DEFAULT_CFG": ("MXFP8", lambda o, i: 8.25),
    "INT8_WEIGHT_ONLY_CFG": ("W8A16", lambda o, i: 8 + 32 / i),
}


def _tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():  # noqa: SIM118
                out[k] = fh.get_tensor(k)
    return out


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_roundtrip_and_file_size(tmp_path, name):
    algo, bits = FORMATS[name]
    model = quantized(tiny_llama(), preset(name))
    report = export_hf_checkpoint(model, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "modeloptim_scales.pth").exists()  # no side file
    ref = logits(model)
    loaded = load_hf_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(logits(loaded), ref, rtol=0, atol=0)
    assert report.quant_algo == algo
    hfq = json.loads((tmp_path / "ckpt" / "hf_quant_config.json").read_text())["quantization"]
    assert hfq["quant_algo"] == algo
    assert hfq["exclude_modules"] == ["lm_head"]
    # file size: what the quantized weights occupy on disk matches the format's bits
    t = _tensors(tmp_path / "ckpt")
    q_layers = [n.removesuffix(".weight") for n, v in t.items() if n.endswith("proj.weight")]
    q_bytes = sum(
        v.numel() * v.element_size()
        for k, v in t.items()
        if k.rsplit(".", 1)[0] in q_layers and k.rsplit(".", 1)[1].startswith("weight")
    )
    shapes = [model.get_submodule(n).weight.shape for n in q_layers]
    expect = sum(bits(o, i) * o * i / 8 for o, i in shapes)
    assert q_bytes == pytest.approx(expect, rel=1e-9)
    n_weights = sum(o * i for o, i in shapes)
    if name == "NVFP4_DEFAULT_CFG":
        assert 8 * q_bytes / n_weights == pytest.approx(4.5, abs=0.01)
    file_bytes = sum(f.stat().st_size for f in (tmp_path / "ckpt").glob("*.safetensors"))
    tensor_bytes = sum(v.numel() * v.element_size() for v in t.values())
    assert tensor_bytes <= file_bytes < tensor_bytes + 64 * 1024  # header only on top


def test_tensor_layout_nvfp4(tmp_path):
    model = quantized(tiny_llama(), preset("NVFP4_DEFAULT_CFG"))
    export_hf_checkpoint(model, tmp_path / "c")
    t = _tensors(tmp_path / "c")
    p = "model.layers.0.mlp.down_proj"
    assert t[f"{p}.weight"].dtype == torch.uint8
    assert t[f"{p}.weight"].shape == (128, 128)  # [out, in / 2]
    assert t[f"{p}.weight_scale"].dtype == torch.float8_e4m3fn
    assert t[f"{p}.weight_scale"].shape == (128, 16)  # [out, in / 16]
    assert t[f"{p}.weight_scale_2"].shape == ()
    amax = model.get_submodule(p).weight_quantizer.amax
    torch.testing.assert_close(t[f"{p}.weight_scale_2"], amax.reshape(()) / (6 * 448))
    in_amax = model.get_submodule(p).input_quantizer.amax
    torch.testing.assert_close(t[f"{p}.input_scale"], in_amax.reshape(()) / (6 * 448))
    # first byte: element 0 in the low nibble, element 1 in the high nibble
    codes = model.get_submodule(p)._parameters["weight"]
    assert t[f"{p}.weight"].shape[1] * 2 == codes.shape[1]
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "modelopt"
    assert cfg["quantization_config"]["quant_algo"] == "NVFP4"


def test_fp8_with_kv_cache(tmp_path):
    cfg = preset("FP8_DEFAULT_CFG")
    cfg["quant_cfg"] = cfg["quant_cfg"] + [
        {"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": (4, 3), "axis": None}}
    ]
    model = quantized(tiny_llama(), cfg)
    attn = model.model.layers[1].self_attn
    assert attn.k_bmm_quantizer.is_enabled
    export_hf_checkpoint(model, tmp_path / "c")
    t = _tensors(tmp_path / "c")
    k = t["model.layers.1.self_attn.k_proj.k_scale"]
    torch.testing.assert_close(k, attn.k_bmm_quantizer.amax.reshape(()) / 448)
    assert "model.layers.1.self_attn.v_proj.v_scale" in t
    hfq = json.loads((tmp_path / "c" / "hf_quant_config.json").read_text())["quantization"]
    assert hfq["kv_cache_quant_algo"] == "FP8"
    loaded = load_hf_checkpoint(tmp_path / "c")
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)


def test_compressed_model_exports_the_same(tmp_path):
    a = quantized(tiny_llama(), preset("NVFP4_DEFAULT_CFG"))
    b = quantized(tiny_llama(), preset("NVFP4_DEFAULT_CFG"))
    compress(b)
    export_hf_checkpoint(a, tmp_path / "a")
    export_hf_checkpoint(b, tmp_path / "b")
    ta, tb = _tensors(tmp_path / "a"), _tensors(tmp_path / "b")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(
            ta[k].reshape(-1).view(torch.uint8), tb[k].reshape(-1).view(torch.uint8)
        ), k


def test_sharded_and_side_files(tmp_path):
    model = quantized(tiny_llama(), preset("FP8_DEFAULT_CFG"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    (src / "tokenizer.json").write_text("{}")
    model.config._name_or_path = str(src)
    report = export_hf_checkpoint(model, tmp_path / "c", max_shard_bytes=64 * 1024)
    files = {p.name for p in (tmp_path / "c").iterdir()}
    assert "model.safetensors.index.json" in files
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 2
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= files
    assert set(report.files) == files
    index = json.loads((tmp_path / "c" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    loaded = load_hf_checkpoint(tmp_path / "c")
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)


def test_export_dtype_bf16(tmp_path):
    model = quantized(tiny_llama(), preset("NVFP4_DEFAULT_CFG"))
    export_hf_checkpoint(model, tmp_path / "c", dtype=torch.bfloat16)
    t = _tensors(tmp_path / "c")
    assert t["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert t["model.layers.0.self_attn.q_proj.weight"].dtype == torch.uint8
    loaded = load_hf_checkpoint(tmp_path / "c")
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16
    assert math.isfinite(float(logits(loaded).abs().max()))


@pytest.mark.parametrize(
    ("name", "algo"),
    [
        ("INT4_AWQ_CFG", "W4A16_AWQ"),
        ("W4A8_AWQ_BETA_CFG", "W4A8_AWQ"),
        ("INT8_SMOOTHQUANT_CFG", "W8A8_SQ_PER_CHANNEL"),
    ],
)
def test_real_awq_and_smoothquant_roundtrip(tmp_path, name, algo):
    import copy

    from modeloptim.torch.quantization.config import presets

    model = quantized(tiny_llama(), copy.deepcopy(getattr(presets, name)))  # real algorithm
    report = export_hf_checkpoint(model, tmp_path / "c")
    assert report.quant_algo == algo
    t = _tensors(tmp_path / "c")
    pqs = [k for k in t if k.endswith(".pre_quant_scale")]
    assert pqs  # smoothing factors are exported
    for k in pqs:
        layer = model.get_submodule(k.removesuffix(".pre_quant_scale"))
        torch.testing.assert_close(t[k], layer.input_quantizer.pre_quant_scale.reshape(-1))
    hfq = json.loads((tmp_path / "c" / "hf_quant_config.json").read_text())["quantization"]
    if algo != "W8A8_SQ_PER_CHANNEL":
        assert hfq["pre_quant_scale"] is True
    # fused groups (found by the trace module) carry one input scale and one smoothing factor
    # (a no-op when the calibration already shared them: harmonized_groups is then empty)
    checked = 0
    for i in range(2):
        for group in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")):
            part = "self_attn" if group[0] == "q_proj" else "mlp"
            keys = [f"model.layers.{i}.{part}.{p}" for p in group]
            for suffix in ("input_scale", "pre_quant_scale"):
                if f"{keys[0]}.{suffix}" in t:
                    first = t[f"{keys[0]}.{suffix}"]
                    assert all(torch.equal(t[f"{k}.{suffix}"], first) for k in keys[1:])
                    checked += 1
    # every fused group's input_scale (W4A16 has none); AWQ/SmoothQuant folded those groups'
    # smoothing into the norms, so they carry no pre_quant_scale
    assert checked == (0 if algo == "W4A16_AWQ" else 4)
    loaded = load_hf_checkpoint(tmp_path / "c")
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)
