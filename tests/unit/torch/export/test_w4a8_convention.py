"""W4A8_AWQ checkpoint tensors decoded by an independent float64 decoder of the convention.

Convention (NVIDIA/Model-Optimizer modelopt/torch/export/quant_utils.py: get_scaling_factor,
pack_int4_in_uint8; NVIDIA/TensorRT-LLM tensorrt_llm/_torch/modules/linear.py:
W4A8_AWQ_LinearMethod):
- ``weight``: uint8 ``[out/2, in]``; byte ``[r, c]`` holds int4 codes of rows ``2r`` (low
  nibble) and ``2r+1`` (high nibble), two's complement;
- ``weight_scale``: float32 ``[out, in/group]`` = block amax / 7 (int4 value = code * scale);
- ``weight_scale_2``: float32 scalar = FP8-stage amax / 448; the engine turns the int4 value
  into FP8 as ``fp8(value / weight_scale_2)`` and rescales the GEMM by it;
- ``input_scale``: float32 scalar = activation amax / 448; ``pre_quant_scale``: ``[in]``.
"""

import pytest
import torch

from modeloptim.torch.export import export_hf_checkpoint
from modeloptim.torch.export.loader import load_safetensors_folder

from ._tiny import preset, quantized, tiny_llama

pytestmark = pytest.mark.hf


def _decode_int4_rows(packed):
    p = packed.to(torch.int64)
    lo, hi = p & 0xF, p >> 4
    out = torch.empty(2 * p.shape[0], p.shape[1], dtype=torch.int64)
    out[0::2], out[1::2] = lo, hi
    return torch.where(out >= 8, out - 16, out)


def _fp8_round(x):
    """Round float64 ``x`` to the nearest E4M3 value (ties to even), saturating at 448."""
    a = x.abs().clamp(max=448.0)
    e = torch.floor(torch.log2(a.clamp(min=2.0**-9))).clamp(min=-6)
    step = torch.exp2(e - 3)
    return torch.sign(x) * torch.round(a / step) * step


def test_w4a8_checkpoint_decodes_to_our_fake_quant_weights(tmp_path):
    model = quantized(tiny_llama(), preset("W4A8_AWQ_BETA_CFG"))
    report = export_hf_checkpoint(model, tmp_path / "c")
    assert report.quant_algo == "W4A8_AWQ"
    t = load_safetensors_folder(tmp_path / "c")
    checked = 0
    for name, module in model.named_modules():
        if f"{name}.weight_scale_2" not in t:
            continue
        w, ws = t[f"{name}.weight"], t[f"{name}.weight_scale"]
        ws2, ins = t[f"{name}.weight_scale_2"], t[f"{name}.input_scale"]
        out, inp = module.weight.shape
        assert w.dtype == torch.uint8
        assert tuple(w.shape) == (out // 2, inp)
        assert ws.dtype == torch.float32
        assert tuple(ws.shape) == (out, inp // 128)
        assert ws2.dtype == torch.float32
        assert ws2.shape == ()
        assert ins.shape == ()
        codes = _decode_int4_rows(w)
        assert int(codes.abs().max()) <= 7
        value = codes.double() * ws.double().repeat_interleave(128, dim=1)  # int4 stage
        decoded = _fp8_round(value / ws2.double()) * ws2.double()  # FP8 stage, as engines do
        with torch.no_grad():
            ours = module.weight_quantizer(module.weight).double()
        # our float32 math divides by the multiplier where the decoder multiplies by the
        # scale (<= 1 ulp apart); an FP8 rounding tie can flip on such an ulp, so allow a few
        # such elements (each one FP8 step) and nothing else
        close = torch.isclose(decoded, ours, rtol=2e-7, atol=0)
        assert (~close).sum().item() <= max(2, ours.numel() // 100000), name
        # the amaxes behind the scales: block amax / 7 and the stage amaxes / 448
        stage1, stage2 = module.weight_quantizer.quantizers()
        torch.testing.assert_close(
            ws.double(), stage1.amax.double().reshape(out, -1) / 7, rtol=2e-6, atol=0
        )
        torch.testing.assert_close(
            ws2.double(), stage2.amax.double().reshape(()) / 448, rtol=2e-6, atol=0
        )
        torch.testing.assert_close(
            ins.double(), module.input_quantizer.amax.double().reshape(()) / 448, rtol=2e-6, atol=0
        )
        checked += 1
    assert checked == 14  # 7 linears x 2 layers
