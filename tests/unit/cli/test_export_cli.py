"""`modeloptim export` on a tiny Llama with a monkeypatched loader."""

from __future__ import annotations

import json

import pytest
import torch

from modeloptim.cli.main import main
from modeloptim.torch.export import load_hf_checkpoint

transformers = pytest.importorskip("transformers")

TEXT = " ".join(f"word{i % 37} sentence number {i}." for i in range(400))


class CharTokenizer:
    """Tiny offline tokenizer: one token per character (vocab 96)."""

    def __call__(self, text, return_tensors="pt", add_special_tokens=False):
        return {"input_ids": torch.tensor([[ord(c) % 96 for c in text]])}


@pytest.fixture
def loader(monkeypatch):
    models = []

    def fake_load_model(name_or_path=None, dtype=torch.float32):
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(
            vocab_size=96,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        models.append(transformers.LlamaForCausalLM(cfg).eval())
        return models[-1], CharTokenizer()

    monkeypatch.setattr("modeloptim.torch.utils.default_model.load_model", fake_load_model)
    return models


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def test_export_json_and_reload(loader, text_file, tmp_path, capsys):
    out = tmp_path / "ckpt"
    rc = main(
        [
            "export",
            "--format",
            "nvfp4",
            "--text",
            str(text_file),
            "--calib-size",
            "2",
            "--seq-len",
            "32",
            "--output",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quant_algo"] == "NVFP4"
    assert report["quantized_layers"] == 14
    assert report["excluded"] == ["lm_head"]
    assert report["quantized_weight_bits"] == pytest.approx(4.5, abs=0.01)
    assert (out / "hf_quant_config.json").is_file()
    ids = torch.randint(0, 96, (1, 10))
    with torch.no_grad():
        ref = loader[-1](input_ids=ids).logits
        got = load_hf_checkpoint(out)(input_ids=ids).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_export_compressed_tensors_table(loader, text_file, tmp_path, capsys):
    rc = main(
        [
            "export",
            "--format",
            "fp8",
            "--layout",
            "compressed-tensors",
            "--text",
            str(text_file),
            "--calib-size",
            "1",
            "--seq-len",
            "32",
            "--output",
            str(tmp_path / "ct"),
        ]
    )
    assert rc == 0
    assert "compressed-tensors" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "ct" / "config.json").read_text())
    assert cfg["quantization_config"]["format"] == "float-quantized"


def test_unbuilt_algorithm_needs_max(loader, text_file, tmp_path, capsys, monkeypatch):
    import modeloptim.torch.quantization as mtq

    real_get = mtq.calibration_algorithms.get

    def get(method):
        if method == "awq_lite":  # as before the algos branch landed
            raise NotImplementedError("calibration algorithm 'awq_lite' is not implemented yet")
        return real_get(method)

    monkeypatch.setattr(mtq.calibration_algorithms, "get", get)
    rc = main(
        [
            "export",
            "--format",
            "int4_awq",
            "--text",
            str(text_file),
            "--output",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--algorithm max" in err[0]
    assert not loader  # refused before the model was loaded
    assert not (tmp_path / "x").exists()


def test_bad_output_and_help(loader, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["export", "--output", str(blocker)]) == 2
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code == 0
    assert "modeloptim export --output" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", "--format", "int3", "--output", str(tmp_path / "y")])
