"""Real weights: SmolLM2-135M (fp32 CPU) quantized with presets; perplexity on held-out text.

Calibration uses one half of the standard library's docstrings, evaluation the other half.
The model loads once; each case quantizes it, measures, then exports every layer back.
"""

from __future__ import annotations

import pytest
import torch

import modeloptim.torch.opt as mto
import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.nn import QuantModule

pytest.importorskip("transformers")

pytestmark = [pytest.mark.hf, pytest.mark.slow]

SEQ_LEN = 128
CALIB_WINDOWS = 2
EVAL_WINDOWS = 4


@pytest.fixture(scope="module")
def smollm2():
    from modeloptim.torch.utils.default_model import load_default_model
    from modeloptim.torch.utils.perplexity import perplexity, token_windows
    from modeloptim.utils.text_corpus import stdlib_docstring_corpus

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model, tok = load_default_model(torch.float32)
    calib = token_windows(tok, stdlib_docstring_corpus("calib"), SEQ_LEN, CALIB_WINDOWS)
    evalw = token_windows(tok, stdlib_docstring_corpus("eval"), SEQ_LEN, EVAL_WINDOWS)
    baseline = perplexity(model, evalw)
    return model, calib, evalw, baseline, perplexity


def _quantized_ppl(smollm2, preset) -> float:
    model, calib, evalw, _, perplexity = smollm2

    def loop(m):
        for row in calib:
            m(input_ids=row[None])

    mtq.quantize(model, preset, loop)
    try:
        with mtq.cache_quantized_weights(model):
            return perplexity(model, evalw)
    finally:
        # Undo the quantization so the shared model serves the next test: layers back to
        # their classes, and the recorded "quantize" mode forgotten.
        for layer in list(model.modules()):
            if isinstance(layer, QuantModule):
                layer.export()
        mto.ModeloptStateManager(model).clear()


def test_baseline_is_sane(smollm2):
    baseline = smollm2[3]
    assert 5 < baseline < 60


def test_fp8_within_5_percent(smollm2):
    ppl = _quantized_ppl(smollm2, mtq.FP8_DEFAULT_CFG)
    baseline = smollm2[3]
    assert ppl != baseline
    assert abs(ppl / baseline - 1) < 0.05, (baseline, ppl)


def test_int8_weight_only_within_1_percent(smollm2):
    ppl = _quantized_ppl(smollm2, mtq.INT8_WEIGHT_ONLY_CFG)
    baseline = smollm2[3]
    assert ppl != baseline
    assert abs(ppl / baseline - 1) < 0.01, (baseline, ppl)
