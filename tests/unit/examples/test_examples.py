"""The scripts in ``examples/`` run end to end (small settings) and print sane figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_llm_ptq_quantizes_and_reloads_exactly() -> None:
    out = _load("llm_ptq").main(["--preset", "FP8_DEFAULT_CFG", "--seq-len", "64",
                                 "--calib-windows", "2", "--eval-windows", "2"])
    # FP8 costs SmolLM2 a few percent of perplexity, never a blow-up.
    assert out["ppl_float"] < out["ppl_quant"] * 1.05
    assert out["ppl_quant"] < out["ppl_float"] * 1.15
    assert out["reload_max_diff"] <= 1e-3


def test_cnn_prune_quantize_deploys() -> None:
    out = _load("cnn_prune_quantize").main(["--train", "3000", "--test", "1000", "--epochs", "1",
                                            "--candidates", "2"])
    assert out["float"] > 60.0  # one epoch on 3k images already learns Fashion-MNIST
    assert out["pruned+int8"] > out["pruned"] - 2.0
    assert out["restore_exact"] == 1.0
    assert out["onnx_agreement"] >= 99.0


def test_onnx_ptq_agrees_with_fp32() -> None:
    out = _load("onnx_ptq").main(["--files", "200", "--calib", "32"])
    assert out["int8"] >= 0.95
    assert out["fp16"] >= 0.99
