"""Compressed linear layers through the GEMM backends (W4A16 Triton kernels).

The kernels run in Triton's CPU interpreter (tests/unit/conftest.py sets TRITON_INTERPRET);
``compressed_gemm._ON_CPU`` lets the CPU tensors of these tests take the path that CUDA
tensors take by default. References: the fake-quantized model before ``compress`` (float16
outputs, so tolerances are float16 rounding) and the generic dequantize + matmul path.
"""

import copy

import pytest
import torch
from torch import nn

pytest.importorskip("triton")

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization import compressed_gemm
from modeloptim.torch.quantization.compress import compress
from modeloptim.torch.quantization.config import presets
from modeloptim.torch.quantization.model_quant import quantize
from modeloptim.torch.quantization.nn.modules.quant_module import cache_quantized_weights


def _rel(y, ref):
    return ((y.double() - ref.double()).norm() / ref.double().norm()).item()


def _quantized_fp16(cfg, bias=True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128, bias=bias), nn.GELU(), nn.Linear(128, 64, bias=bias))
    model = model.half()
    data = [torch.randn(8, 256).half() for _ in range(2)]
    return quantize(model, copy.deepcopy(cfg), lambda m: [m(x) for x in data])


@pytest.fixture
def backend_calls(monkeypatch):
    """Route CPU tensors like CUDA ones; record the backend chosen for each packed GEMM."""
    monkeypatch.setattr(compressed_gemm, "_ON_CPU", True)
    seen = []
    real = B.quantized_linear

    def spy(x, weight, bias=None, backend=None):
        seen.append((B.GEMM_BACKENDS.select(x, weight).name, weight.format, x.shape[0]))
        return real(x, weight, bias, backend)

    monkeypatch.setattr(B, "quantized_linear", spy)
    return seen


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", B.WeightFormat.INT4),
        ("INT4_AWQ_CFG", B.WeightFormat.INT4),  # pre_quant_scale on the input quantizer
        ("NVFP4_DEFAULT_CFG", B.WeightFormat.NVFP4),  # fake-quantized FP4 activations too
        ("W4A16_NVFP4_CFG", B.WeightFormat.NVFP4),
    ],
)
@pytest.mark.parametrize("shape", [(1, 256), (2, 256), (2, 3, 256)])  # GEMV 1-2 rows, tiles
def test_compressed_layers_run_the_w4a16_kernels(backend_calls, name, fmt, shape):
    model = _quantized_fp16(getattr(presets, name))
    x = torch.randn(*shape).half()
    with torch.no_grad():
        ref = model(x)
    compress(model)
    with torch.no_grad():
        y = model(x)
    rows = x.reshape(-1, 256).shape[0]
    assert backend_calls == [("w4a16_triton", fmt, rows)] * 2
    assert y.shape == ref.shape
    assert y.dtype == torch.float16
    assert _rel(y, ref) < 3e-3  # float16 output rounding; a wrong scale or nibble gives ~1


def test_w4a8_keeps_the_generic_path(backend_calls):
    # W4A8: an FP8 weight stage still applies on top of the packed INT4 weight
    model = _quantized_fp16({**presets.W4A8_AWQ_BETA_CFG, "algorithm": "max"})
    x = torch.randn(3, 256).half()
    with torch.no_grad():
        ref = model(x)
    compress(model)
    with torch.no_grad():
        y = model(x)
    assert backend_calls == []
    torch.testing.assert_close(y, ref, rtol=0, atol=0)


def test_grad_disabled_switch_and_cpu_default_keep_the_exact_generic_path(
    backend_calls, monkeypatch
):
    model = _quantized_fp16(presets.INT4_BLOCKWISE_WEIGHT_ONLY_CFG)
    x = torch.randn(4, 256).half()
    with torch.no_grad():
        ref = model(x)
    compress(model)
    y = model(x)  # grad enabled: the generic path (autograd through the dequantized weight)
    torch.testing.assert_close(y.detach(), ref, rtol=0, atol=0)
    monkeypatch.setattr(compressed_gemm, "ENABLED", False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    monkeypatch.setattr(compressed_gemm, "ENABLED", True)
    monkeypatch.setattr(compressed_gemm, "_ON_CPU", False)  # CPU tensors by default
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    assert backend_calls == []


def test_backend_weight_follows_in_place_changes(backend_calls):
    model = _quantized_fp16(presets.INT4_BLOCKWISE_WEIGHT_ONLY_CFG)
    compress(model)
    x = torch.randn(2, 256).half()
    with torch.no_grad():
        y0 = model(x)
        cw = model[0]._modules["weight"]
        cw.data.copy_(torch.roll(cw.data, 1, dims=1))  # codes changed in place
        y1 = model(x)
    compressed_gemm._ON_CPU = False
    try:
        with torch.no_grad():
            ref = model(x)  # generic path on the changed codes
    finally:
        compressed_gemm._ON_CPU = True
    assert _rel(y1, y0) > 0.1
    assert _rel(y1, ref) < 3e-3


def test_cache_context_on_a_compressed_model():
    # cache_quantized_weights used to read the (deleted) float weight of packed layers
    model = _quantized_fp16(presets.INT8_DEFAULT_CFG).float()
    x = torch.randn(3, 256)
    compress(model)
    with torch.no_grad():
        ref = model(x)
        with cache_quantized_weights(model):
            y = model(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)


def test_converters_refuse_layouts_the_kernels_cannot_take():
    from modeloptim.torch.quantization.qtensor import QTENSOR_TYPES

    int4 = QTENSOR_TYPES.get("int4_block")
    ok = int4.quantize(torch.randn(8, 256), block_size=128)
    qw = compressed_gemm.BACKEND_WEIGHTS.convert(ok)
    assert qw is not None
    assert qw.group_size == 128
    assert torch.allclose(qw.dequantize(torch.float32), ok.dequantize(torch.float32), rtol=1e-6)
    assert (
        compressed_gemm.BACKEND_WEIGHTS.convert(int4.quantize(torch.randn(8, 200), block_size=128))
        is None
    )
    assert (
        compressed_gemm.BACKEND_WEIGHTS.convert(int4.quantize(torch.randn(8, 96), block_size=96))
        is None
    )
    assert compressed_gemm.BACKEND_WEIGHTS.convert(int4.quantize(torch.randn(2, 8, 256))) is None
    nv = QTENSOR_TYPES.get("nvfp4").quantize(torch.randn(8, 256))
    qn = compressed_gemm.BACKEND_WEIGHTS.convert(nv)
    assert qn is not None
    assert torch.equal(qn.dequantize(torch.float32), nv.dequantize(torch.float32))
    assert "int8" not in compressed_gemm.BACKEND_WEIGHTS
