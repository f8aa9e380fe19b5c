"""layout="compressed-tensors": read by the external `compressed-tensors` package through
`transformers.from_pretrained` (CPU), which must reproduce our weights and logits."""

import copy
import json

import pytest
import torch

from modeloptim.torch.export import export_hf_checkpoint
from modeloptim.torch.export.packers import UnsupportedFormatError

from ._tiny import calib_ids, logits, preset, quantized, tiny_llama

pytestmark = pytest.mark.hf
import compressed_tensors  # noqa: E402, F401  (required: CI must install compressed-tensors)

# preset -> (CT format, their dtype, weight tolerance, logits tolerance).
# compressed-tensors divides by amax/bound where we multiply by bound/amax; the float32 noise
# (~1e-7) that this and its own kernels add flips the few INT8 activation codes that sit
# within noise of a rounding boundary, which moves W8A8 logits (magnitude ~1) by up to ~5e-3
# (measured layer by layer: identical inputs give 1e-7 output differences). Its NVFP4
# decompression always produces bfloat16, so NVFP4 models are read in bfloat16 and compared
# with bf16 tolerances (one bf16 ulp on weights).
CASES = {
    "FP8_DEFAULT_CFG": ("float-quantized", torch.float32, 1e-7, 1e-5),
    "INT8_DEFAULT_CFG": ("int-quantized", torch.float32, 1e-7, 1e-2),
    "INT8_WEIGHT_ONLY_CFG": ("int-quantized", torch.float32, 1e-7, 1e-5),
    "INT4_AWQ_CFG": ("pack-quantized", torch.float32, 1e-7, 1e-5),  # RTN, no smoothing
    "W4A16_NVFP4_CFG": ("nvfp4-pack-quantized", torch.bfloat16, 2**-8, 3e-2),
}


def _their_weight(layer):
    """The layer's effective weight, decompressed by compressed-tensors itself."""
    from compressed_tensors.compressors.base import decompress_module

    w = layer.weight if "weight" in layer._parameters else None
    if w is not None and w.dtype in (torch.float32, torch.bfloat16):
        return w.float()  # already decompressed at load time
    layer = copy.deepcopy(layer)
    decompress_module(layer)
    return layer.weight.float()


@pytest.mark.parametrize("name", sorted(CASES))
def test_transformers_with_compressed_tensors_reproduces(tmp_path, name):
    from transformers import AutoModelForCausalLM

    fmt, dtype, wtol, ltol = CASES[name]
    model = quantized(tiny_llama(), preset(name))
    export_hf_checkpoint(model, tmp_path / "c", layout="compressed-tensors")
    qc = json.loads((tmp_path / "c" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    assert qc["format"] == fmt
    assert qc["ignore"] == ["lm_head"]
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "c", dtype=dtype).eval()
    layer = theirs.model.layers[1].mlp.down_proj
    assert getattr(layer, "quantization_scheme", None) is not None  # really their code path
    ours = model.model.layers[1].mlp.down_proj
    with ours.quantize_weight():
        ours_w = ours.weight.detach()
    torch.testing.assert_close(
        _their_weight(layer), ours_w, rtol=wtol, atol=wtol * float(ours_w.abs().max())
    )
    # calibration tokens: no activation exceeds its amax. (Beyond amax, compressed-tensors
    # clips INT8 to -128 where our narrow range clips to -127.)
    ids = calib_ids()
    torch.testing.assert_close(logits(theirs, ids), logits(model, ids), rtol=0, atol=ltol)


def test_nvfp4_w4a4_scales(tmp_path):
    from safetensors.torch import load_file

    model = quantized(tiny_llama(), preset("NVFP4_DEFAULT_CFG"))
    export_hf_checkpoint(model, tmp_path / "c", layout="compressed-tensors")
    t = load_file(str(tmp_path / "c" / "model.safetensors"))
    p = "model.layers.0.self_attn.o_proj"
    q = model.get_submodule(p)
    assert t[f"{p}.weight_packed"].dtype == torch.uint8
    assert t[f"{p}.weight_scale"].dtype == torch.float8_e4m3fn
    torch.testing.assert_close(
        t[f"{p}.weight_global_scale"], (6 * 448 / q.weight_quantizer.amax).reshape(1)
    )
    torch.testing.assert_close(
        t[f"{p}.input_global_scale"], (6 * 448 / q.input_quantizer.amax).reshape(1)
    )


def test_smoothed_layers_are_refused(tmp_path):
    model = quantized(tiny_llama(), preset("INT4_AWQ_CFG"))
    model.model.layers[0].mlp.down_proj.input_quantizer.pre_quant_scale = torch.ones(256)
    with pytest.raises(UnsupportedFormatError, match=r"down_proj.*pre_quant_scale"):
        export_hf_checkpoint(model, tmp_path / "c", layout="compressed-tensors")
    assert not (tmp_path / "c").exists()
