"""`modeloptim quantize` / `modeloptim eval` on a tiny Llama with a monkeypatched loader."""

from __future__ import annotations

import json

import pytest
import torch

from modeloptim.cli.main import main

transformers = pytest.importorskip("transformers")

TEXT = " ".join(f"word{i % 37} sentence number {i}." for i in range(400))


class CharTokenizer:
    """Tiny offline tokenizer: one token per character (vocab 96)."""

    def __call__(self, text, return_tensors="pt", add_special_tokens=False):
        return {"input_ids": torch.tensor([[ord(c) % 96 for c in text]])}


def _tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture
def loader(monkeypatch):
    calls = []

    def fake_load_model(name_or_path=None, dtype=torch.float32):
        calls.append(name_or_path)
        return _tiny_llama(), CharTokenizer()

    monkeypatch.setattr("modeloptim.torch.utils.default_model.load_model", fake_load_model)
    return calls


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


ARGS = ["--calib-size", "2", "--eval-tokens", "64", "--seq-len", "32"]


def test_quantize_json_report_then_eval_reloads_same_model(loader, text_file, tmp_path, capsys):
    out_dir = tmp_path / "q"
    rc = main(
        [
            "quantize",
            "--format",
            "int8",
            "--text",
            str(text_file),
            *ARGS,
            "--output",
            str(out_dir),
            "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "int8"
    assert report["preset"] == "INT8_DEFAULT_CFG"
    assert report["layers_quantized"] == 14  # 2 layers x 7 linears; lm_head excluded
    assert report["eval_tokens"] == 64
    assert report["calib_tokens"] == 64
    assert 1 < report["perplexity_before"] < 1000
    assert report["perplexity_after"] != report["perplexity_before"]
    # INT8 weights: 28 linears' weights at 8 bits, embeddings/norms stay 32-bit
    assert report["effective_bits_before"] == 32.0
    assert report["effective_bits_after"] < 32.0
    assert report["weight_mb_after"] < report["weight_mb_before"]
    assert set(report["seconds"]) >= {"load", "eval_before", "quantize", "eval_after", "save"}
    assert (out_dir / "modelopt.pth").is_file()

    rc = main(
        [
            "eval",
            "--text",
            str(text_file),
            "--eval-tokens",
            "64",
            "--seq-len",
            "32",
            "--quantized",
            str(out_dir),
            "--json",
        ]
    )
    assert rc == 0
    again = json.loads(capsys.readouterr().out)
    assert again["format"] == "int8"
    assert again["perplexity"] == pytest.approx(report["perplexity_after"], rel=1e-6)
    assert again["effective_bits"] == pytest.approx(report["effective_bits_after"])


def test_quantize_prints_table_by_default(loader, text_file, capsys):
    assert main(["quantize", "--format", "nvfp4", "--text", str(text_file), *ARGS]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out
    assert "effective bits" in out
    assert "NVFP4_DEFAULT_CFG" in out


def test_eval_float_model(loader, text_file, capsys):
    assert main(["eval", "--text", str(text_file), "--eval-tokens", "64", "--seq-len", "32"]) == 0
    assert "perplexity" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quantize", "--text", "/nonexistent/file.txt"], "--text"),
        (["quantize", "--output", __file__], "--output"),
        (["eval", "--quantized", "/nonexistent"], "--quantized"),
        (["quantize", "--output", str(__import__("pathlib").Path(__file__).parent)], "non-empty"),
    ],
)
def test_bad_input_exits_with_one_line_before_loading(loader, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err
    assert loader == []  # rejected before the model was loaded


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quantize", "--format", "int3"], "invalid choice"),
        (["quantize", "--calib-size", "0"], "positive integer"),
    ],
)
def test_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code != 0
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_text_too_short_is_one_line(loader, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("tiny text")
    assert main(["quantize", "--text", str(short), *ARGS]) == 2
    assert "calibration text" in capsys.readouterr().err


def test_help_has_example(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    assert "modeloptim quantize --format int8_wo --json" in out
