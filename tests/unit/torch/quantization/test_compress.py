"""mtq.compress: packed weights, same outputs as fake quant, memory actually drops."""

import copy

import pytest
import torch
from torch import nn

from modeloptim.torch.quantization.compress import (
    CompressedWeight,
    compress,
    is_compressed,
    weight_nbytes,
)
from modeloptim.torch.quantization.config import presets
from modeloptim.torch.quantization.model_quant import quantize

# name -> (config, storage bits per weight for an [out, in] layer, scale overhead included)
CFGS = {
    "int8": (presets.INT8_DEFAULT_CFG, lambda o, i: 8 + 32 / i),
    "int8_wo": (presets.INT8_WEIGHT_ONLY_CFG, lambda o, i: 8 + 32 / i),
    "fp8": (presets.FP8_DEFAULT_CFG, lambda o, i: 8 + 32 / (o * i)),
    "fp8_per_channel_wo": (
        {
            "quant_cfg": [
                {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": (4, 3), "axis": 0}},
                {"quantizer_name": "default", "enable": False},
            ],
            "algorithm": "max",
        },
        lambda o, i: 8 + 32 / i,
    ),
    "int4_block": (presets.INT4_BLOCKWISE_WEIGHT_ONLY_CFG, lambda o, i: 4 + 32 / 128),
    "nvfp4": (presets.NVFP4_DEFAULT_CFG, lambda o, i: 4.5 + 32 / (o * i)),
    "w4a16_nvfp4": (presets.W4A16_NVFP4_CFG, lambda o, i: 4.5 + 32 / (o * i)),
    "mxfp8": (presets.MXFP8_DEFAULT_CFG, lambda o, i: 8.25),
    "mxfp4": (presets.MXFP4_DEFAULT_CFG, lambda o, i: 4.25),
    "w4a8_awq_rtn": ({**presets.W4A8_AWQ_BETA_CFG, "algorithm": "max"}, lambda o, i: 4.25),
}


def _mlp():
    return nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 128))


def _quantized(cfg):
    model = _mlp()
    data = [torch.randn(8, 256) for _ in range(2)]

    def loop(m):
        for x in data:
            m(x)

    return quantize(model, copy.deepcopy(cfg), loop)


@pytest.mark.parametrize("name", sorted(CFGS))
def test_compress_matches_fake_quant_and_saves_memory(name):
    cfg, bits = CFGS[name]
    model = _quantized(cfg)
    x = torch.randn(4, 256)
    with torch.no_grad():
        ref = model(x)
    fp_bytes = sum(m.weight.numel() * 4 for m in model if isinstance(m, nn.Linear))
    before = weight_nbytes(model)
    compress(model)
    after = weight_nbytes(model)
    assert all(is_compressed(m) for m in model if isinstance(m, nn.Linear))
    assert "weight" not in dict(model[0].named_parameters(recurse=False))
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    packed = sum(m._modules["weight"].qtensor.nbytes for m in linears)
    expect = sum(
        bits(m.out_features, m.in_features) * m.out_features * m.in_features / 8 for m in linears
    )
    assert packed == pytest.approx(expect, rel=1e-9)
    # the float weights are really gone: memory drops by float bytes - packed (+ shape buffers)
    assert before - after == fp_bytes - packed - 16 * len(linears)


def test_state_dict_roundtrip_and_device_move():
    model = _quantized(presets.NVFP4_DEFAULT_CFG)
    compress(model)
    sd = model.state_dict()
    assert sd["0.weight.data"].dtype == torch.uint8
    assert sd["0.weight.block_scale"].dtype == torch.float8_e4m3fn
    other = _quantized(presets.NVFP4_DEFAULT_CFG)
    compress(other)
    other.load_state_dict(sd)
    x = torch.randn(3, 256)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
    moved = model.to(torch.float64)  # buffers keep their integer/fp8 dtypes
    assert moved[0]._modules["weight"].data.dtype == torch.uint8
    assert isinstance(model[0]._modules["weight"], CompressedWeight)


def test_unquantized_model_is_rejected_unchanged():
    model = _mlp()
    with pytest.raises(ValueError, match="no quantized layer"):
        compress(model)
    assert isinstance(model[0].weight, nn.Parameter)


def test_static_weight_without_amax_is_rejected_before_changes():
    model = quantize(_mlp(), copy.deepcopy(presets.INT8_WEIGHT_ONLY_CFG), None)
    model[2].weight_quantizer.amax = None
    with pytest.raises(ValueError, match=r"layer '2'.*no amax"):
        compress(model)
    assert not is_compressed(model[0])
