"""The scripts in ``examples/`` run end to end (small settings) and print sane figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_llama_folder(path: Path) -> Path:
    """A small random LLaMA with SmolLM2's real tokenizer, saved as a local HF folder."""
    import transformers

    from modeloptim.torch.utils.default_model import GGUF_FILE, default_model_dir

    tok = transformers.AutoTokenizer.from_pretrained(default_model_dir(), gguf_file=GGUF_FILE)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("preset", ["FP8_DEFAULT_CFG", "INT4_AWQ_CFG"])
def test_llm_ptq_quantizes_and_reloads_exactly(tmp_path: Path, preset: str) -> None:
    # The example's default is SmolLM2 (the CLI tests cover it); a tiny model with the same
    # tokenizer runs the same code path in seconds.
    model_dir = _tiny_llama_folder(tmp_path / "tiny")
    out = _load("llm_ptq").main(
        [
            "--model",
            str(model_dir),
            "--preset",
            preset,
            "--seq-len",
            "64",
            "--calib-windows",
            "4",
            "--eval-windows",
            "2",
            "--export-dir",
            str(tmp_path / "q"),
        ]
    )
    # A random model's perplexity is about the vocabulary size; quantization must not wreck it.
    assert out["ppl_quant"] < out["ppl_float"] * 1.5
    assert out["reload_max_diff"] == 0.0  # export -> reload reproduces the logits exactly
    assert (tmp_path / "q" / "hf_quant_config.json").is_file()


def test_cnn_prune_quantize_deploys() -> None:
    out = _load("cnn_prune_quantize").main(
        ["--train", "3000", "--test", "1000", "--epochs", "1", "--candidates", "2"]
    )
    assert out["float"] > 60.0  # one epoch on 3k images already learns Fashion-MNIST
    assert out["pruned+int8"] > out["pruned"] - 2.0
    assert out["restore_exact"] == 1.0
    assert out["onnx_agreement"] >= 99.0


def test_onnx_ptq_agrees_with_fp32() -> None:
    out = _load("onnx_ptq").main(["--files", "200", "--calib", "32"])
    assert out["int8"] >= 0.95
    assert out["fp16"] >= 0.99
