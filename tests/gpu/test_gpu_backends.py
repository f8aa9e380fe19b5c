"""GEMM backends on the GPU: W4A16/NVFP4 Triton kernels in bf16, FP8 and INT8 GEMMs."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

if torch.cuda.is_available():
    from modeloptim.torch.quantization import backends as B
    from modeloptim.torch.quantization.backends import fp8, int8, w4a16


def _rel(y, ref):
    return ((y.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
@pytest.mark.parametrize("m", [1, 4, 33, 512])
def test_w4a16_bf16(fmt, m):
    torch.manual_seed(m)
    n, k = 1024, 2048
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    qw = B.quantize_int4(w, 128) if fmt == "int4" else B.quantize_nvfp4(w)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    assert B.GEMM_BACKENDS.select(x, qw).name == "w4a16_triton"
    y = B.quantized_linear(x, qw, bias)
    ref = x.double() @ qw.dequantize(torch.float64).T + bias.double()
    assert _rel(y, ref) < 1e-2


@pytest.mark.parametrize("per_row", [False, True])
def test_fp8_activation_kernel_bit_exact(per_row):
    x = torch.randn(300, 1000, device="cuda", dtype=torch.bfloat16) * 7
    q, inv = fp8.quantize_activation_fp8(x, per_row)
    q2, inv2 = fp8._quant_torch(x, per_row)
    assert torch.equal(q.view(torch.uint8), q2.view(torch.uint8))
    assert torch.equal(inv, inv2)


@pytest.mark.parametrize("per_channel", [False, True])
def test_fp8_linear(per_channel):
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("no FP8 tensor cores")
    w = torch.randn(512, 1024, device="cuda")
    qw = B.quantize_fp8(w, per_channel=per_channel)
    x = torch.randn(256, 1024, device="cuda", dtype=torch.bfloat16)
    assert B.GEMM_BACKENDS.select(x, qw).name == "fp8_scaled_mm"
    y = B.quantized_linear(x, qw)
    ref = x.double() @ qw.dequantize(torch.float64).T
    assert _rel(y, ref) < 0.06


def test_int8_linear():
    w = torch.randn(512, 1024, device="cuda")
    qw = B.quantize_int8(w)
    x = torch.randn(256, 1024, device="cuda", dtype=torch.bfloat16)
    assert B.GEMM_BACKENDS.select(x, qw).name == "int8_int_mm"
    y = B.quantized_linear(x, qw)
    ref = x.double() @ qw.dequantize(torch.float64).T
    assert _rel(y, ref) < 0.02


def test_int8_activation_kernel_bit_exact():
    x = torch.randn(300, 1000, device="cuda", dtype=torch.bfloat16) * 7
    q, inv = int8.quantize_activation_int8(x)
    q2, inv2 = int8._quant_torch(x)
    assert torch.equal(q, q2)
    assert torch.equal(inv, inv2)


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_dequantize_w4_bit_exact(fmt):
    w = torch.randn(512, 1024, device="cuda", dtype=torch.bfloat16)
    qw = B.quantize_int4(w, 128) if fmt == "int4" else B.quantize_nvfp4(w)
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(w4a16.dequantize_w4(qw, dtype), qw.dequantize(dtype))


@pytest.mark.parametrize(
    ("fmt", "group", "k"), [("int4", 128, 1152), ("int4", 32, 1056), ("nvfp4", 16, 1056)]
)
@pytest.mark.parametrize("m", [3, 16, 40, 100])  # each default tile; masked rows
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fused_gemm_matches_float64(monkeypatch, fmt, group, k, m, dtype):
    monkeypatch.setattr(w4a16, "FUSED_GEMM", True)
    monkeypatch.setattr(w4a16, "GEMV_MAX_M", 0)
    torch.manual_seed(m + k)
    n = 1000  # not a multiple of any tile
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    qw = B.quantize_int4(w, group) if fmt == "int4" else B.quantize_nvfp4(w)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype)
    ref = x.double() @ qw.dequantize(torch.float64).T + bias.double()
    y = B.quantized_linear(x, qw, bias)
    assert y.dtype == dtype
    tol = {torch.bfloat16: 5e-3, torch.float16: 1e-3, torch.float32: 1e-5}[dtype]
    assert _rel(y, ref) < tol


GEMV_VARIANTS = {
    "words": {},
    "words fold decode": {"GEMV_WORDS_LEAN": False, "GEMV_WORDS_BLOCK_K": 1024},
    "words lean 16x1024": {"GEMV_WORDS_BLOCK_K": 1024},
    "words pipelined 3 stages": {"GEMV_WORDS_PIPE": 3},
    "interleaved pipelined 2 stages": {"GEMV_ILV": True, "GEMV_ILV_PIPE": 2},
    "words prefetch": {"GEMV_WORDS_PREFETCH": True},
    "words split 4": {"GEMV_WORDS_SPLIT_K": 4},
    "words prefetch split 2": {"GEMV_WORDS_PREFETCH": True, "GEMV_WORDS_SPLIT_K": 2},
    "tensor cores": {"GEMV_DOT": True},
    "tensor cores bk128": {"GEMV_DOT": True, "GEMV_DOT_BLOCK_K": 128, "GEMV_DOT_BLOCK_N": 32},
    "interleaved": {"GEMV_ILV": True},
    "interleaved prefetch scale2d 8x4096 w8": {
        "GEMV_ILV": True,
        "GEMV_ILV_PREFETCH": True,
        "GEMV_ILV_SCALE2D": True,
        "GEMV_ILV_BLOCK_N": 8,
        "GEMV_ILV_BLOCK_K": 4096,
        "GEMV_ILV_WARPS": 8,
    },
    "interleaved scale2d 4x2048": {
        "GEMV_ILV": True,
        "GEMV_ILV_SCALE2D": True,
        "GEMV_ILV_BLOCK_K": 2048,
    },
    "interleaved 8x2048 w8": {
        "GEMV_ILV": True,
        "GEMV_ILV_BLOCK_N": 8,
        "GEMV_ILV_BLOCK_K": 2048,
        "GEMV_ILV_WARPS": 8,
    },
}


@pytest.mark.parametrize("variant", list(GEMV_VARIANTS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 3])
def test_int4_gemv_variants_match_float64(monkeypatch, variant, dtype, m):
    monkeypatch.setattr(w4a16, "GEMV_MAX_M", 8)  # the GEMV kernels with 3 rows too
    for key, value in GEMV_VARIANTS[variant].items():
        monkeypatch.setattr(w4a16, key, value)
    torch.manual_seed(m)
    n, k = 1000, 4096  # n not a multiple of any tile
    qw = B.quantize_int4(torch.randn(n, k, device="cuda", dtype=dtype), 128)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype)
    ref = x.double() @ qw.dequantize(torch.float64).T + bias.double()
    y = w4a16.w4a16_linear(x, qw, bias)
    assert not y.isnan().any()
    # 16-bit output rounding: ~2e-3 (bf16) / 3e-4 (fp16); a wrong nibble or scale gives ~1
    assert _rel(y, ref) < (4e-3 if dtype == torch.bfloat16 else 1e-3), variant
