"""The word-wise INT4 GEMV (8 nibbles per int32, bf16 bit-pattern decode) vs float64 math.

Runs in Triton's CPU interpreter (conftest.py). Each case also checks that the word kernel was
the one that ran (the byte kernel would hide a broken word kernel).
"""

import pytest
import torch

pytest.importorskip("triton")

from modeloptim.torch.quantization import backends as B
from modeloptim.torch.quantization.backends import w4a16


def _rel(y, ref):
    return ((y.double() - ref).norm() / ref.norm()).item()


@pytest.fixture(autouse=True)
def _gemv_up_to_8_rows(monkeypatch):
    # these tests run the GEMV kernels with up to 8 activation rows (the kernels take any M;
    # the dispatcher sends M > GEMV_MAX_M to the tile kernel by default)
    monkeypatch.setattr(w4a16, "GEMV_MAX_M", 8)


@pytest.fixture
def calls(monkeypatch):
    seen = []
    real = w4a16._gemv_words
    monkeypatch.setattr(w4a16, "_gemv_words", lambda *a: seen.append(1) or real(*a))
    return seen


#: decode step variants: (LEAN, FOLD)
DECODES = {"lean": (True, True), "fold": (False, True), "plain": (False, False)}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("decode", list(DECODES))
@pytest.mark.parametrize(
    ("group", "block_k", "k"),
    [(128, 256, 512), (32, 256, 384), (256, 64, 512), (64, 64, 192)],
)
def test_words_gemv_matches_float64(monkeypatch, calls, dtype, decode, group, block_k, k):
    lean, fold = DECODES[decode]
    monkeypatch.setattr(w4a16, "GEMV_WORDS_LEAN", lean)
    monkeypatch.setattr(w4a16, "GEMV_WORDS_FOLD", fold)
    monkeypatch.setattr(w4a16, "GEMV_WORDS_BLOCK_K", block_k)
    monkeypatch.setattr(w4a16, "GEMV_WORDS_BLOCK_N", 8)
    torch.manual_seed(0)
    n = 20  # not a multiple of BLOCK_N: masked rows
    w = torch.randn(n, k)
    qw = B.quantize_int4(w.to(dtype), group)
    x = torch.randn(2, k).to(dtype)
    bias = torch.randn(n).to(dtype)
    ref = x.double() @ qw.dequantize(torch.float64).T + bias.double()
    y = w4a16.w4a16_linear(x, qw, bias)
    assert calls, "the word kernel did not run"
    assert y.dtype == dtype
    # output rounding dominates (the interpreter stores bf16 by truncation: ~3x the rounding
    # error of round-to-nearest); a wrong nibble order or scale gives ~1
    assert _rel(y, ref) < (1e-3 if dtype == torch.float16 else 8e-3)


@pytest.mark.parametrize("lean", [True, False])
def test_words_gemv_every_code_and_position(monkeypatch, calls, lean):
    # one weight row per (code, nibble position): catches a swapped half or shift
    monkeypatch.setattr(w4a16, "GEMV_WORDS_LEAN", lean)
    k = 64
    rows = []
    for code in range(-7, 8):
        for pos in range(8):
            r = torch.zeros(k)
            r[pos::8] = float(code)
            r[0] = 7.0 if code != 7 else -7.0  # fixes the group scale to 1
            rows.append(r)
    w = torch.stack(rows)
    qw = B.quantize_int4(w, 64)
    assert torch.equal(qw.dequantize(torch.float32), w)
    x = torch.arange(1, k + 1, dtype=torch.float16)[None, :] / 64
    y = w4a16.w4a16_linear(x, qw, None)
    assert calls
    ref = x.double() @ w.double().T
    assert torch.allclose(y.double(), ref, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("block_k", [64, 256])  # one group per step; several groups per step
def test_lean_decode_cancels_the_high_halfs_low_bits(monkeypatch, calls, block_k):
    # The lean step reads the high element of each pair without masking the low half's bits,
    # which adds (0x4300 + code_lo) / 2**16 to it; x_lo - x_hi / 2**16 and a constant cancel
    # that. Make the term visible: high-half weights zero with activations 1, low-half
    # weights up to 7 (offset code 15) with activations ~0.01. Uncancelled, it adds
    # ~128 * 7.5 / 2**16 = 0.015 to a signal of ~0.5 (3%); the fold itself costs ~0.2%.
    monkeypatch.setattr(w4a16, "GEMV_WORDS_BLOCK_K", block_k)
    k, n = 256, 12
    torch.manual_seed(4)
    hi = (torch.arange(k) % 8) >= 4  # elements in the high halves of the word pairs
    codes = torch.randint(-7, 8, (n, k)).float()
    codes[:, ::64] = 7.0  # group scale 1 in every group
    codes[:, hi] = 0.0
    qw = B.quantize_int4(codes, 64)
    assert torch.equal(qw.dequantize(torch.float32), codes)
    x = torch.where(hi, 1.0, 0.01 * torch.randn(k)).to(torch.float16)[None, :]
    y = w4a16.w4a16_linear(x, qw, None)
    assert calls
    ref = x.double() @ codes.double().T
    assert _rel(y, ref) < 5e-3


def test_words_layout_rejected_when_misaligned():
    w = torch.randn(4, 64)
    qw = B.quantize_int4(w, 64)
    odd = B.QuantizedWeight(
        qw.format,
        torch.empty(4 * 32 + 1, dtype=torch.uint8)[1:].view(4, 32),
        qw.scale,
        qw.shape,
        qw.group_size,
    )
    assert not w4a16._words_layout_ok(odd)
    assert w4a16._words_layout_ok(qw)


@pytest.mark.parametrize(
    ("prefetch", "split", "group", "block_k", "k"),
    [
        (True, 1, 128, 256, 512),  # prefetch past the last step is masked off
        (True, 1, 32, 64, 384),  # several groups per step
        (False, 2, 128, 128, 512),
        (True, 4, 64, 64, 512),  # split + prefetch, one group per step
        (True, 3, 64, 128, 384),  # 48 words / 3 = 16 = one 128-wide step per split
        (False, 4, 128, 256, 512),  # 64 words / 4 = 16 < a 32-word step: no split
    ],
)
def test_words_prefetch_and_split_k_match_float64(
    monkeypatch, calls, prefetch, split, group, block_k, k
):
    monkeypatch.setattr(w4a16, "GEMV_WORDS_PREFETCH", prefetch)
    monkeypatch.setattr(w4a16, "GEMV_WORDS_SPLIT_K", split)
    monkeypatch.setattr(w4a16, "GEMV_WORDS_BLOCK_K", block_k)
    monkeypatch.setattr(w4a16, "GEMV_WORDS_BLOCK_N", 8)
    torch.manual_seed(1)
    n = 20
    qw = B.quantize_int4(torch.randn(n, k).to(torch.float16), group)
    x = torch.randn(3, k).to(torch.float16)
    bias = torch.randn(n).to(torch.float16)
    ref = x.double() @ qw.dequantize(torch.float64).T + bias.double()
    y = w4a16.w4a16_linear(x, qw, bias)
    assert calls, "the word kernel did not run"
    assert _rel(y, ref) < 1e-3
    y0 = w4a16.w4a16_linear(x, qw, None)
    assert _rel(y0, ref - bias.double()) < 1e-3


# fp16 only: Triton's interpreter (3.9) computes bf16 dots on the raw bits (tests/gpu runs
# the bf16 case on the GPU)
@pytest.mark.parametrize("dtype", [torch.float16])
@pytest.mark.parametrize(
    ("group", "block_k", "k"), [(128, 256, 512), (128, 256, 384), (256, 256, 512)]
)
def test_tensor_core_gemv_matches_float64(monkeypatch, dtype, group, block_k, k):
    seen = []
    real = w4a16._gemv_dot
    monkeypatch.setattr(w4a16, "_gemv_dot", lambda *a: seen.append(1) or real(*a))
    monkeypatch.setattr(w4a16, "GEMV_DOT", True)
    monkeypatch.setattr(w4a16, "GEMV_DOT_BLOCK_K", block_k)
    monkeypatch.setattr(w4a16, "GEMV_DOT_BLOCK_N", 16)
    torch.manual_seed(2)
    n = 40  # masked rows in the last block
    qw = B.quantize_int4(torch.randn(n, k).to(dtype), group)
    x = torch.randn(3, k).to(dtype)
    bias = torch.randn(n).to(dtype)
    ref = x.double() @ qw.dequantize(torch.float64).T + bias.double()
    y = w4a16.w4a16_linear(x, qw, bias)
    assert seen, "the tensor-core kernel did not run"
    assert _rel(y, ref) < (1e-3 if dtype == torch.float16 else 8e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("prefetch", "scale2d"), [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize(
    ("group", "block_k", "k", "block_n"),
    [(128, 256, 512, 4), (128, 1024, 384, 8), (256, 256, 768, 4), (128, 128, 256, 16)],
)
def test_interleaved_gemv_matches_float64(
    monkeypatch, dtype, prefetch, scale2d, group, block_k, k, block_n
):
    monkeypatch.setattr(w4a16, "GEMV_ILV_PREFETCH", prefetch)
    monkeypatch.setattr(w4a16, "GEMV_ILV_SCALE2D", scale2d)
    seen = []
    real = w4a16._gemv_ilv
    monkeypatch.setattr(w4a16, "_gemv_ilv", lambda *a: seen.append(1) or real(*a))
    monkeypatch.setattr(w4a16, "GEMV_ILV", True)
    monkeypatch.setattr(w4a16, "GEMV_ILV_BLOCK_K", block_k)
    monkeypatch.setattr(w4a16, "GEMV_ILV_BLOCK_N", block_n)
    torch.manual_seed(3)
    n = 22  # masked rows in the last block
    qw = B.quantize_int4(torch.randn(n, k).to(dtype), group)
    x = torch.randn(2, k).to(dtype)
    bias = torch.randn(n).to(dtype)
    ref = x.double() @ qw.dequantize(torch.float64).T + bias.double()
    y = w4a16.w4a16_linear(x, qw, bias)
    assert seen, "the interleaved kernel did not run"
    assert _rel(y, ref) < (1e-3 if dtype == torch.float16 else 8e-3)
    # codes changed in place: the interleaved copy is rebuilt
    qw.data.copy_(B.quantize_int4(torch.randn(n, k).to(dtype), group).data)
    ref2 = x.double() @ qw.dequantize(torch.float64).T
    assert _rel(w4a16.w4a16_linear(x, qw, None), ref2) < (1e-3 if dtype == torch.float16 else 8e-3)


def test_interleaved_gemv_every_code_and_position(monkeypatch):
    monkeypatch.setattr(w4a16, "GEMV_ILV", True)
    k = 128
    rows = []
    for code in range(-7, 8):
        for pos in range(0, 128, 9):  # positions across all pairs/nibbles of the block
            r = torch.zeros(k)
            r[pos] = float(code)
            r[127 if pos != 127 else 0] = 7.0 if code != 7 else -7.0  # group scale 1
            rows.append(r)
    w = torch.stack(rows)
    qw = B.quantize_int4(w, 128)
    assert torch.equal(qw.dequantize(torch.float32), w)
    x = (torch.arange(1, k + 1, dtype=torch.float32) / 64).to(torch.float16)[None, :]
    y = w4a16.w4a16_linear(x, qw, None)
    ref = x.double() @ w.double().T
    assert torch.allclose(y.double(), ref, rtol=2e-3, atol=1e-3)
