"""quantize/calibrate as mto modes: save/restore round trips bit for bit in a fresh process."""

import importlib.util
import pathlib
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import modeloptim.torch.opt as mto
import modeloptim.torch.quantization as mtq

transformers = pytest.importorskip("transformers")

HERE = pathlib.Path(__file__)


def _built(name: str) -> bool:
    method = mtq.QuantizeConfig.parse(mtq.PRESETS[name]).algorithm.method
    try:
        mtq.calibration_algorithms.get(method)
    except NotImplementedError:
        return False
    return True


BUILT = [n for n in mtq.PRESETS if _built(n)]


def build(kind: str) -> nn.Module:
    """Same seed, same model: the fresh process rebuilds exactly this architecture."""
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32)).eval()
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 10),
        ).eval()
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def inputs(kind: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        return torch.randn(4, 64, generator=g) * 3
    if kind == "cnn":
        return torch.randn(2, 3, 8, 8, generator=g)
    return torch.randint(0, 128, (2, 16), generator=g)


def run(model: nn.Module, kind: str, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=x).logits if kind == "llama" else model(x)


def quantized(kind: str, preset: str) -> nn.Module:
    model = build(kind)
    batches = [inputs(kind, s) for s in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KV/MLP-only presets match nothing in an MLP or CNN
        mtq.quantize(model, mtq.PRESETS[preset], lambda m: [run(m, kind, b) for b in batches])
    return model


CASES = [(k, p) for k in ("mlp", "cnn", "llama") for p in BUILT]

RESTORE_SCRIPT = """
import importlib.util, sys, torch, transformers
import modeloptim.torch.opt as mto
spec = importlib.util.spec_from_file_location("t_mode", sys.argv[1])
t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)
folder = sys.argv[2]
out = {}
for kind, preset in t.CASES:
    model = mto.restore(t.build(kind), f"{folder}/{kind}-{preset}.pth")
    out[f"{kind}-{preset}"] = t.run(model, kind, t.inputs(kind, 99))
torch.save(out, f"{folder}/restored.pt")
"""


def test_every_built_preset_round_trips_in_a_fresh_process(tmp_path):
    assert "NVFP4_AWQ_FULL_CFG" in BUILT
    assert "INT8_SMOOTHQUANT_CFG" in BUILT
    expected = {}
    for kind, preset in CASES:
        model = quantized(kind, preset)
        mto.save(model, tmp_path / f"{kind}-{preset}.pth")
        expected[f"{kind}-{preset}"] = run(model, kind, inputs(kind, 99))
    proc = subprocess.run(
        [sys.executable, "-c", RESTORE_SCRIPT, str(HERE), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    restored = torch.load(tmp_path / "restored.pt")
    mismatched = [k for k in expected if not torch.equal(restored[k], expected[k])]
    assert not mismatched, mismatched


def test_quantizer_state_covers_changes_after_quantize(tmp_path):
    model = quantized("llama", "W4A8_AWQ_BETA_CFG")  # sequential weight quantizers, pre_quant_scale
    mtq.disable_quantizer(model, "*layers.1.mlp*")
    mto.save(model, tmp_path / "m.pth")
    fresh = mto.restore(build("llama"), tmp_path / "m.pth")
    assert not fresh.model.layers[1].mlp.down_proj.weight_quantizer[0].is_enabled
    assert isinstance(fresh.model.layers[0].mlp.up_proj.weight_quantizer, mtq.SequentialQuantizer)
    x = inputs("llama", 5)
    assert torch.equal(run(fresh, "llama", x), run(model, "llama", x))


def test_quantize_then_calibrate_is_recorded_and_restores(tmp_path):
    model = quantized("mlp", "INT8_DEFAULT_CFG")
    big = [inputs("mlp", s) * 10 for s in range(2)]
    mtq.calibrate(model, "max", lambda m: [m(b) for b in big])
    state = mto.modelopt_state(model)
    assert [r["mode"] for r in state["modes"]] == ["quantize", "calibrate"]
    assert state["modes"][1]["config"]["algorithm"]["method"] == "max"
    mto.save(model, tmp_path / "m.pth")
    fresh = mto.restore(build("mlp"), tmp_path / "m.pth")
    x = inputs("mlp", 7)
    assert torch.equal(fresh(x), model(x))


def test_pruning_after_quantize_is_refused_naming_both():
    importlib.import_module("modeloptim.torch.prune")  # registers the pruning modes
    model = quantized("mlp", "INT8_DEFAULT_CFG")
    with pytest.raises(ValueError, match=r"mode 'fastnas' may not follow mode 'quantize'"):
        mto.apply_mode(model, [("fastnas", {})])


def test_failed_quantize_records_no_mode():
    model = build("mlp")

    def broken(m):
        raise RuntimeError("data loader died")

    with pytest.raises(RuntimeError, match="data loader died"):
        mtq.quantize(model, mtq.INT8_DEFAULT_CFG, broken)
    assert not mto.is_converted(model)
    assert type(model[0]) is nn.Linear


def test_restore_quantized_state_into_other_architecture_leaves_model(tmp_path):
    mto.save(quantized("mlp", "FP8_DEFAULT_CFG"), tmp_path / "m.pth")
    other = nn.Sequential(nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 32)).eval()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="architecture"):
        mto.restore(other, tmp_path / "m.pth")
    assert type(other[0]) is nn.Linear
    assert all(torch.equal(other.state_dict()[k], v) for k, v in before.items())
    assert not mto.is_converted(other)


def test_apply_mode_quantize_then_calibrate_equals_quantize():
    batches = [inputs("mlp", s) for s in range(3)]

    def loop(m):
        for b in batches:
            m(b)

    model = mto.apply_mode(build("mlp"), [("quantize", mtq.INT8_DEFAULT_CFG)])
    assert model[0].input_quantizer.amax is None  # the mode converts; it does not calibrate
    mtq.calibrate(model, "max", loop)
    ref = mtq.quantize(build("mlp"), mtq.INT8_DEFAULT_CFG, loop)
    x = inputs("mlp", 3)
    assert torch.equal(model(x), ref(x))


def test_hf_save_pretrained_from_pretrained_restores_quantized_llama(tmp_path):
    mto.enable_huggingface_checkpointing()
    model = quantized("llama", "NVFP4_AWQ_LITE_CFG")
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert mto.is_converted(loaded)
    x = inputs("llama", 11)
    assert torch.equal(run(loaded, "llama", x), run(model, "llama", x))
