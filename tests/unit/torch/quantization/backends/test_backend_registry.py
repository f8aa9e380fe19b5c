"""Backend registry: selection by format, priority and availability; clean fallbacks."""

import pytest
import torch

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends.registry import GemmBackendRegistry


def _w():
    return B.quantize_int8(torch.randn(16, 32))


def test_priority_and_availability():
    reg = GemmBackendRegistry()
    calls = []

    @reg.register("slow", (B.WeightFormat.INT8,), priority=0)
    def slow(x, w, b):
        calls.append("slow")
        return x

    @reg.register("fast", (B.WeightFormat.INT8,), priority=5, available=lambda x, w: x.is_cuda)
    def fast(x, w, b):
        calls.append("fast")
        return x

    x = torch.randn(4, 32)
    assert reg.select(x, _w()).name == "slow"  # fast one needs CUDA
    assert [b.name for b in reg.candidates(x, _w())] == ["slow"]
    with pytest.raises(RuntimeError, match="int4"):
        reg.select(x, B.quantize_int4(torch.randn(4, 128)))
    with pytest.raises(ValueError, match="already registered"):
        reg.register("slow", (B.WeightFormat.INT8,))(slow)
    with pytest.raises(KeyError, match="known"):
        reg.get("nope")


def test_cpu_dispatch_uses_fallback_for_gpu_only_formats():
    x = torch.randn(20, 32)
    for qw in (B.quantize_fp8(torch.randn(16, 32)), _w()):
        assert B.GEMM_BACKENDS.select(x, qw).name == "dequantize"
        y = B.quantized_linear(x, qw)
        torch.testing.assert_close(y, x @ qw.dequantize().T)


def test_quantized_linear_keeps_leading_dims_and_checks_k():
    qw = _w()
    x = torch.randn(2, 3, 32)
    assert B.quantized_linear(x, qw, backend="dequantize").shape == (2, 3, 16)
    with pytest.raises(ValueError, match="input features"):
        B.quantized_linear(torch.randn(2, 31), qw)
    with pytest.raises(ValueError, match="cannot run"):
        B.quantized_linear(torch.randn(20, 32), qw, backend="fp8_scaled_mm")


def test_all_backends_registered():
    assert set(B.GEMM_BACKENDS.names()) >= {
        "dequantize",
        "fp8_scaled_mm",
        "int8_int_mm",
        "w4a16_triton",
    }
