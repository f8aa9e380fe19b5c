"""W4A16 / NVFP4 Triton GEMV and GEMM, FP8 activation quantization, INT8 and FP8 GEMMs.

Triton kernels run in the CPU interpreter (conftest.py) at tiny sizes. The interpreter's bf16
matmul is unreliable, so GEMM tiles are checked in fp32 and fp16 here and in bf16 on the GPU.
"""

import pytest
import torch

pytest.importorskip("triton")

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends import fp8, int8, w4a16


def _rel(y, ref):
    return ((y.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("fmt", ["int4_g128", "int4_g32", "nvfp4"])
@pytest.mark.parametrize("m", [1, 3, 20, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_w4a16_matches_dequantized_matmul(fmt, m, dtype):
    n, k = 40, 256  # n not a multiple of the tile: masked rows
    w = torch.randn(n, k)
    qw = {
        "int4_g128": lambda: B.quantize_int4(w.to(dtype), 128),
        "int4_g32": lambda: B.quantize_int4(w.to(dtype), 32),
        "nvfp4": lambda: B.quantize_nvfp4(w),
    }[fmt]()
    x = torch.randn(m, k).to(dtype)
    bias = torch.randn(n).to(dtype)
    ref = x.double() @ qw.dequantize(torch.float64).T + bias.double()
    assert B.GEMM_BACKENDS.select(x, qw).name == "w4a16_triton"
    y = B.quantized_linear(x, qw, bias)
    assert y.dtype == dtype
    assert y.shape == (m, n)
    assert _rel(y, ref) < (1e-6 if dtype == torch.float32 else 2e-3)


def test_w4a16_gemv_block_k_smaller_than_group(monkeypatch):
    monkeypatch.setattr(w4a16, "GEMV_BLOCK_K", 64)
    w = torch.randn(16, 512)
    qw = B.quantize_int4(w, 256)
    x = torch.randn(1, 512)
    ref = x.double() @ qw.dequantize(torch.float64).T
    assert _rel(B.quantized_linear(x, qw), ref) < 1e-6


def test_w4a16_wrong_weight_is_not_a_silent_pass():
    # a weight whose rows are swapped must give a different product
    w = torch.randn(16, 128)
    qw = B.quantize_int4(w, 128)
    swapped = B.QuantizedWeight(qw.format, qw.data.flip(0), qw.scale, qw.shape, qw.group_size)
    x = torch.randn(1, 128)
    ref = x.double() @ qw.dequantize(torch.float64).T
    assert _rel(B.quantized_linear(x, swapped), ref) > 0.1


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_activation_kernel_equals_torch(per_row, dtype):
    x = (torch.randn(5, 300) * torch.logspace(-2, 2, 5)[:, None]).to(dtype)
    x[2] = 0.0
    q, inv = fp8.quantize_activation_fp8(x, per_row)
    q2, inv2 = fp8._quant_torch(x, per_row)
    assert q.dtype == torch.float8_e4m3fn
    assert torch.equal(q.view(torch.uint8), q2.view(torch.uint8))
    assert torch.equal(inv, inv2)


@pytest.mark.skipif(not hasattr(torch, "_scaled_mm"), reason="torch without _scaled_mm")
@pytest.mark.parametrize("per_channel", [False, True])
def test_fp8_linear_close_to_dequantized(per_channel):
    w = torch.randn(32, 64)
    qw = B.quantize_fp8(w, per_channel=per_channel)
    x = torch.randn(24, 64)
    try:
        y = fp8.fp8_linear(x.bfloat16(), qw, None)
    except (RuntimeError, NotImplementedError) as err:  # CPU builds without FP8 GEMM
        pytest.skip(f"_scaled_mm unsupported here: {err}")
    ref = x.double() @ qw.dequantize(torch.float64).T
    assert _rel(y, ref) < 0.06  # activations in E4M3 (3 mantissa bits) + bf16 output


def test_int8_linear_close_to_dequantized():
    w = torch.randn(32, 64)
    qw = B.quantize_int8(w)
    x = torch.randn(24, 64)
    try:
        y = int8.int8_linear(x, qw, torch.ones(32))
    except (RuntimeError, NotImplementedError) as err:
        pytest.skip(f"_int_mm unsupported here: {err}")
    ref = x.double() @ qw.dequantize(torch.float64).T + 1
    assert _rel(y, ref) < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_activation_kernel_equals_torch(dtype):
    x = (torch.randn(5, 300) * torch.logspace(-2, 2, 5)[:, None]).to(dtype)
    x[2] = 0.0
    q, inv = int8.quantize_activation_int8(x)
    q2, inv2 = int8._quant_torch(x)
    assert q.dtype == torch.int8
    assert torch.equal(q, q2)
    assert torch.equal(inv, inv2)


def test_scale_epilogue_kernel():
    acc = torch.randint(-(2**20), 2**20, (37, 150), dtype=torch.int32)
    sa = torch.rand(37, 1)
    sw = torch.rand(150)
    bias = torch.randn(150)
    y = int8.scale_accumulator(acc, sa, sw, torch.float32, bias)
    ref = acc.double() * sa.double() * sw.double()[None, :] + bias.double()
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_dequantize_w4_kernel_bit_exact(dtype, fmt):
    w = torch.randn(24, 256) * torch.logspace(-2, 2, 256)
    if fmt == "nvfp4":
        qws = [B.quantize_nvfp4(w)]
    else:
        qws = [B.quantize_int4(w.to(dtype), g) for g in (32, 128, 256)]
    for qw in qws:
        out = w4a16.dequantize_w4(qw, dtype)
        assert out.dtype == dtype
        assert torch.equal(out, qw.dequantize(dtype))


@pytest.mark.parametrize(
    ("fmt", "group", "k"),
    [
        ("int4", 128, 256),  # a K step inside one group
        ("int4", 32, 256),  # several groups per K step
        ("int4", 64, 320),  # K not a multiple of the step: masked tail
        ("nvfp4", 16, 256),
        ("nvfp4", 16, 288),
    ],
)
@pytest.mark.parametrize("m", [20, 40])  # one and two 32-row tiles (masked rows)
def test_fused_gemm_kernel(fmt, group, k, m, monkeypatch):
    monkeypatch.setattr(w4a16, "FUSED_GEMM", True)
    torch.manual_seed(k + m)
    w = torch.randn(70, k)  # N not a multiple of the tile: masked columns
    qw = B.quantize_int4(w.half(), group) if fmt == "int4" else B.quantize_nvfp4(w)
    bias = torch.randn(70)
    for dtype in (torch.float32, torch.float16):
        x = torch.randn(m, k).to(dtype)
        ref = x.double() @ qw.dequantize(torch.float64).T + bias.double()
        y = w4a16.w4a16_linear(x, qw, bias.to(dtype))
        assert y.shape == (m, 70)
        assert y.dtype == dtype
        assert _rel(y, ref) < (1e-6 if dtype == torch.float32 else 2e-3)


@pytest.mark.parametrize(
    ("m", "path"),
    [(1, "gemv"), (2, "gemv"), (3, "fused"), (128, "fused"), (129, "dequantize")],
)
def test_w4a16_path_by_rows(monkeypatch, m, path):
    # decode rows: GEMV; a few to FUSED_GEMM_MAX_M rows: the tile kernel; more: dense weight
    seen = []
    real_gemv, real_deq = w4a16._gemv_words, w4a16.dequantize_w4
    monkeypatch.setattr(w4a16, "_gemv_words", lambda *a: seen.append("gemv") or real_gemv(*a))
    monkeypatch.setattr(
        w4a16, "dequantize_w4", lambda *a: seen.append("dequantize") or real_deq(*a)
    )
    qw = B.quantize_int4(torch.randn(24, 64).half(), 32)
    x = torch.randn(m, 64).half()
    y = w4a16.w4a16_linear(x, qw, None)
    ref = x.double() @ qw.dequantize(torch.float64).T
    assert _rel(y, ref) < 2e-3
    assert seen == ([] if path == "fused" else [path])


def test_gemm_tile_by_rows():
    assert w4a16._gemm_tile(1)[0] == 16
    assert w4a16._gemm_tile(16)[0] == 16
    assert w4a16._gemm_tile(17)[0] == 32
    assert w4a16._gemm_tile(65)[0] == 64
    assert w4a16._gemm_tile(10**6) == w4a16.GEMM_TILES[-1][1]
