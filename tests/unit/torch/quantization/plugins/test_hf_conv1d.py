"""GPT-2 ``Conv1D`` layers are quantized like ``nn.Linear`` with the transposed weight."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import modeloptim.torch.opt as mto
import modeloptim.torch.quantization as mtq

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402


def _gpt2() -> nn.Module:
    cfg = transformers.GPT2Config(
        n_embd=64,
        n_layer=2,
        n_head=4,
        vocab_size=128,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _loop(x: torch.Tensor) -> Callable[[nn.Module], None]:
    def loop(m: nn.Module) -> None:
        with torch.no_grad():
            m(x)

    return loop


@pytest.mark.parametrize(
    "preset",
    ["INT8_DEFAULT_CFG", "INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "NVFP4_DEFAULT_CFG", "FP8_DEFAULT_CFG"],
)
def test_conv1d_matches_linear_with_transposed_weight(preset: str) -> None:
    torch.manual_seed(0)
    conv = nn.Sequential(Conv1D(96, 64))
    lin = nn.Sequential(nn.Linear(64, 96))
    with torch.no_grad():
        conv[0].weight.normal_()
        conv[0].bias.normal_()
        lin[0].weight.copy_(conv[0].weight.T)
        lin[0].bias.copy_(conv[0].bias)
    x = torch.randn(4, 7, 64)
    cfg = copy.deepcopy(mtq.PRESETS[preset])
    mtq.quantize(conv, cfg, _loop(x))
    mtq.quantize(lin, copy.deepcopy(cfg), _loop(x))
    assert type(conv[0]).__name__.startswith("QuantHFConv1D")
    # Same amax layout (per output channel / per block along the input dim) and same output.
    assert torch.equal(conv[0].weight_quantizer.amax, lin[0].weight_quantizer.amax)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), lin(x), rtol=1e-6, atol=1e-6)
        # The quantized weight is the linear's quantized weight, transposed back to [in, out].
        with conv[0].quantize_weight(), lin[0].quantize_weight():
            assert torch.equal(conv[0].weight, lin[0].weight.T)


def test_gpt2_quantizes_every_projection_and_restores() -> None:
    model = _gpt2()
    x = torch.randint(0, 128, (2, 16))
    ref = model(x).logits
    ln_before = model.transformer.h[0].ln_1.weight.detach().clone()
    mtq.quantize(model, copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG), _loop(x))
    convs = [m for m in model.modules() if isinstance(m, Conv1D)]
    assert len(convs) == 8
    assert all(type(m).__name__.startswith("QuantHFConv1D") for m in convs)
    # SmoothQuant: c_attn's scale folds into ln_1 (its only reader); the output projections
    # read an attention/GELU output and keep a pre_quant_scale.
    block = model.transformer.h[0]
    assert block.attn.c_attn.input_quantizer.pre_quant_scale is None
    assert not torch.equal(block.ln_1.weight, ln_before)
    assert block.attn.c_proj.input_quantizer.pre_quant_scale is not None
    assert block.mlp.c_proj.input_quantizer.pre_quant_scale is not None
    with torch.no_grad():
        out = model(x).logits
    assert 0 < (out - ref).abs().max() < 0.1  # quantized, but close
    state = mto.modelopt_state(model)
    fresh = mto.restore_from_modelopt_state(_gpt2(), state)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x).logits, out)


def test_compress_and_export_refuse_conv1d_before_changing_anything(tmp_path: Path) -> None:
    from modeloptim.torch.export import export_hf_checkpoint

    model = _gpt2()
    x = torch.randint(0, 128, (2, 16))
    mtq.quantize(model, copy.deepcopy(mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG), _loop(x))
    with torch.no_grad():
        before = model(x).logits
    with pytest.raises(ValueError, match=r"stores its weight \[in, out\]"):
        mtq.compress(model)
    with pytest.raises(ValueError, match=r"stores its weight \[in, out\]"):
        export_hf_checkpoint(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not any(type(m).__name__ == "CompressedWeight" for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x).logits, before)
