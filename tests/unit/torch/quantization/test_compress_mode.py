"""mtq.compress as the ``compress`` mode: mto.save/restore give back the packed model."""

import subprocess
import sys

import pytest
import torch

import modeloptim.torch.opt as mto
import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.compress import CompressedWeight, is_compressed

transformers = pytest.importorskip("transformers")

PRESETS = ["NVFP4_DEFAULT_CFG", "W4A8_AWQ_BETA_CFG", "INT8_SMOOTHQUANT_CFG", "FP8_DEFAULT_CFG"]

BUILD = """
import torch, transformers
def build():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128, tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(cfg).eval()
def ids(seed):
    return torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(seed))
"""

RESTORE = (
    BUILD
    + """
import sys
import modeloptim.torch.opt as mto
from modeloptim.torch.quantization.compress import CompressedWeight
out = {}
for name in sys.argv[2:]:
    model = mto.restore(build(), f"{sys.argv[1]}/{name}.pth")
    layer = model.model.layers[0].mlp.down_proj
    assert isinstance(layer._modules["weight"], CompressedWeight), type(layer._modules["weight"])
    with torch.no_grad():
        out[name] = {
            "logits": model(input_ids=ids(9)).logits,
            "packed": {k: v.clone() for k, v in layer._modules["weight"]._buffers.items()},
            "modes": [r["mode"] for r in mto.modelopt_state(model)["modes"]],
        }
torch.save(out, f"{sys.argv[1]}/restored.pt")
"""
)

ns: dict = {}
exec(BUILD, ns)  # the same builder in both processes
build, ids = ns["build"], ns["ids"]


def _compressed(preset):
    model = build()
    mtq.quantize(model, preset, lambda m: [m(input_ids=ids(s)) for s in range(2)])
    return mtq.compress(model)


def test_compress_mode_round_trips_in_a_fresh_process(tmp_path):
    expected = {}
    for name in PRESETS:
        model = _compressed(name)
        assert [r["mode"] for r in mto.modelopt_state(model)["modes"]] == ["quantize", "compress"]
        mto.save(model, tmp_path / f"{name}.pth")
        layer = model.model.layers[0].mlp.down_proj
        with torch.no_grad():
            expected[name] = (
                model(input_ids=ids(9)).logits,
                {k: v.clone() for k, v in layer._modules["weight"]._buffers.items()},
            )
    proc = subprocess.run(
        [sys.executable, "-c", RESTORE, str(tmp_path), *PRESETS], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    restored = torch.load(tmp_path / "restored.pt")
    for name in PRESETS:
        logits, packed = expected[name]
        got = restored[name]
        assert got["modes"] == ["quantize", "compress"]
        assert torch.equal(got["logits"], logits), name
        assert packed.keys() == got["packed"].keys()
        for k, v in packed.items():  # packed codes and scales, bit for bit
            w = got["packed"][k]
            assert v.dtype == w.dtype, (name, k)
            assert torch.equal(v.reshape(-1).view(torch.uint8), w.reshape(-1).view(torch.uint8))


def test_compress_memory_drops_and_is_recorded():
    model = _compressed("NVFP4_DEFAULT_CFG")
    assert all(
        is_compressed(m) for n, m in model.named_modules() if n.endswith(("q_proj", "down_proj"))
    )
    cw = model.model.layers[0].self_attn.q_proj._modules["weight"]
    assert isinstance(cw, CompressedWeight)
    assert cw._buffers["data"].dtype == torch.uint8


def test_nothing_may_follow_compress_and_calibrate_is_refused():
    model = _compressed("INT8_SMOOTHQUANT_CFG")
    before = model.model.layers[0].mlp.up_proj.input_quantizer.amax.clone()
    with pytest.raises(ValueError, match=r"mode 'calibrate' may not follow mode 'compress'"):
        mtq.calibrate(model, "max", lambda m: m(input_ids=ids(3) * 0))
    assert torch.equal(model.model.layers[0].mlp.up_proj.input_quantizer.amax, before)
    with pytest.raises(ValueError, match=r"mode 'compress' may not follow mode 'compress'"):
        mtq.compress(model)


def test_compress_unquantized_model_changes_nothing():
    model = build()
    with pytest.raises(ValueError, match="no quantized layer"):
        mtq.compress(model)
    assert not mto.is_converted(model)
