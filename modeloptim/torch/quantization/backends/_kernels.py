# ruff: noqa: N803, N806  (Triton kernels: constexpr parameters are upper case by convention)
"""Triton kernels of the GEMM backends (imported lazily: this module needs Triton).

The W4A16 decode (GEMV) kernels live in ``_gemv_kernels``.

* ``w4_gemm_kernel``: packed 4-bit weights for a few to ~128 activation rows: dequantizes
  each ``[BLOCK_N, BLOCK_K]`` weight tile in registers to the activation dtype and feeds one
  tensor-core dot per K step.
* ``w4_dequant_kernel``: packed weight -> dense 16-bit weight in one pass, for prefill-size M
  where cuBLAS on the dense weight beats the fused tile kernel.
* ``quant_rows_kernel``: dynamic FP8 E4M3 or INT8 activation quantization, per row (amax of
  the row) or per tensor (given amax), writing the codes and the float32 dequant scale.
* ``scale_epilogue_kernel``: int32 GEMM accumulator times row and column scales, one pass.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..triton._common import clamp_nan, max_nan, rne, round_elem, store_as
from ._w4_decode import _load_scales, _unpack


@triton.jit
def w4_gemm_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    gs_ptr,
    b_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_ym,
    GROUP: tl.constexpr,
    WFMT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr = 8,
):
    """``y = x @ dequant(W).T (+ bias)`` on tensor cores, W dequantized tile by tile in registers.

    Per K step: a contiguous ``[BLOCK_M, BLOCK_K]`` activation tile and the ``[BLOCK_N,
    BLOCK_K / 2]`` packed bytes; the bytes are decoded (even K index in the low nibble), times
    their group scales (``BLOCK_K`` within one group: one scale per row; else a scale per
    ``GROUP`` columns), rounded to the activation dtype exactly as ``QuantizedWeight.dequantize``
    rounds, interleaved back to ``[BLOCK_N, BLOCK_K]`` and fed to one dot with float32
    accumulation; Triton pipelines the loads over ``num_stages``. NVFP4's per-tensor scale is
    applied to the accumulator. Programs are ordered in groups of ``GROUP_M`` row blocks so that
    concurrently running programs share weight tiles in L2.
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    rows_in_group = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % rows_in_group
    pid_n = (pid % per_group) // rows_in_group
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = rm < M
    mask_n = n < N
    kx = tl.arange(0, BLOCK_K)
    j = tl.arange(0, BLOCK_K // 2)
    half_k = K // 2
    NG = K // GROUP
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    x_row = x_ptr + rm.to(tl.int64)[:, None] * stride_xm
    w_row = w_ptr + n.to(tl.int64)[:, None] * half_k
    for k0 in range(0, K, BLOCK_K):
        xm = mask_m[:, None] & (k0 + kx < K)[None, :]
        x = tl.load(x_row + (k0 + kx)[None, :], mask=xm, other=0.0)
        jj = k0 // 2 + j
        wm = mask_n[:, None] & (jj < half_k)[None, :]
        p = tl.load(w_row + jj[None, :], mask=wm, other=0).to(tl.int32)
        lo, hi = _unpack(p, WFMT)
        if BLOCK_K <= GROUP:
            s = _load_scales(s_ptr, n * NG + k0 // GROUP, mask_n, WFMT)[:, None]
        else:
            g = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
            sm = mask_n[:, None] & (g < NG)[None, :]
            sg = _load_scales(s_ptr, n[:, None] * NG + g[None, :], sm, WFMT)
            s = tl.reshape(
                tl.broadcast_to(sg[:, :, None], [BLOCK_N, BLOCK_K // GROUP, GROUP // 2]),
                [BLOCK_N, BLOCK_K // 2],
            )
        w = tl.reshape(tl.join((lo * s).to(x.dtype), (hi * s).to(x.dtype)), [BLOCK_N, BLOCK_K])
        if IEEE:
            acc = tl.dot(x, tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, tl.trans(w), acc)
    if WFMT == 1:
        acc = acc * tl.load(gs_ptr).to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + rm.to(tl.int64)[:, None] * stride_ym + n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _e4m3_bits(v):
    """float8_e4m3fn byte (int32) of a float32 already on the E4M3 grid, |v| <= 448."""
    bits = v.to(tl.uint32, bitcast=True)
    sign = ((bits >> 24) & 128).to(tl.int32)
    a = tl.abs(v)
    e = ((a.to(tl.uint32, bitcast=True) >> 23) & 255).to(tl.int32) - 127
    man = ((a.to(tl.uint32, bitcast=True) >> 20) & 7).to(tl.int32)
    code = tl.where(e >= -6, ((e + 7) << 3) | man, (a * 512.0).to(tl.int32))
    code = tl.where(a != a, 127, code)
    return code | sign


@triton.jit
def quant_rows_kernel(
    x_ptr,
    q_ptr,
    amax_ptr,
    inv_ptr,
    K,
    stride_xm,
    PER_ROW: tl.constexpr,
    OUT_INT8: tl.constexpr,
    TINY: tl.constexpr,
    NATIVE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Dynamic activation quantization: E4M3 bytes or INT8 codes, and the dequant scale."""
    row = tl.program_id(0)
    x_row = x_ptr + row.to(tl.int64) * stride_xm
    q_row = q_ptr + row.to(tl.int64) * K
    cols = tl.arange(0, BLOCK)
    if PER_ROW:
        run = tl.zeros([BLOCK], dtype=tl.float32)
        for k0 in range(0, K, BLOCK):
            xv = tl.load(x_row + k0 + cols, mask=k0 + cols < K, other=0.0).to(tl.float32)
            run = max_nan(run, tl.abs(xv))
        amax = tl.reduce(run, 0, max_nan)
    else:
        amax = tl.load(amax_ptr).to(tl.float32)
    amax = tl.maximum(amax, TINY)
    bound = 127.0 if OUT_INT8 else 448.0
    scale = tl.math.div_rn(bound + tl.zeros_like(amax), amax)
    if PER_ROW:
        tl.store(inv_ptr + row, tl.math.div_rn(1.0 + tl.zeros_like(scale), scale))
    for k0 in range(0, K, BLOCK):
        m = k0 + cols < K
        xv = tl.load(x_row + k0 + cols, mask=m, other=0.0).to(tl.float32)
        if OUT_INT8:
            code = rne(clamp_nan(xv * scale, -127.0, 127.0)).to(tl.int32)
        else:
            v = round_elem(clamp_nan(xv * scale, -448.0, 448.0), -6, 3, NATIVE)
            code = _e4m3_bits(v)
        tl.store(q_row + k0 + cols, code.to(tl.uint8), mask=m)


@triton.jit
def scale_epilogue_kernel(
    acc_ptr,
    sa_ptr,
    sw_ptr,
    b_ptr,
    y_ptr,
    M,
    N,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """``y = acc * sa[:, None] * sw[None, :] (+ bias)`` for an int32 GEMM accumulator."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mm, mn = rm < M, rn < N
    offs = rm.to(tl.int64)[:, None] * N + rn[None, :]
    mask = mm[:, None] & mn[None, :]
    acc = tl.load(acc_ptr + offs, mask=mask, other=0).to(tl.float32)
    sa = tl.load(sa_ptr + rm, mask=mm, other=0.0)
    sw = tl.load(sw_ptr + rn, mask=mn, other=0.0)
    y = acc * sa[:, None] * sw[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + rn, mask=mn, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def w4_dequant_kernel(
    w_ptr,
    s_ptr,
    gs_ptr,
    out_ptr,
    N,
    K,
    GROUP: tl.constexpr,
    WFMT: tl.constexpr,
    BF16: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Packed 4-bit weight ``[N, K/2]`` -> dense ``[N, K]`` (codes times their scales).

    Same arithmetic as ``QuantizedWeight.dequantize``: INT4 ``q * scale``, NVFP4
    ``e2m1 * (block_scale * global_scale)`` in float32, then one rounding to the output dtype.
    Scales are loaded once per (row, group), not per element, and the even/odd halves are
    interleaved in registers so the output is written with contiguous vector stores.
    """
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    pid_k = tl.program_id(1)
    jj = pid_k * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
    half_k = K // 2
    NG = K // GROUP
    mask_n = n < N
    mask = mask_n[:, None] & (jj < half_k)[None, :]
    p = tl.load(w_ptr + n.to(tl.int64)[:, None] * half_k + jj[None, :], mask=mask, other=0)
    lo, hi = _unpack(p.to(tl.int32), WFMT)
    if BLOCK_K <= GROUP:
        s = _load_scales(s_ptr, n * NG + (pid_k * BLOCK_K) // GROUP, mask_n, WFMT)
        if WFMT == 1:
            s = s * tl.load(gs_ptr).to(tl.float32)
        lo = lo * s[:, None]
        hi = hi * s[:, None]
    else:
        g = pid_k * (BLOCK_K // GROUP) + tl.arange(0, BLOCK_K // GROUP)
        s_mask = mask_n[:, None] & (g < NG)[None, :]
        s = _load_scales(s_ptr, n[:, None] * NG + g[None, :], s_mask, WFMT)
        if WFMT == 1:
            s = s * tl.load(gs_ptr).to(tl.float32)
        s3 = s[:, :, None]
        lo3 = tl.reshape(lo, [BLOCK_N, BLOCK_K // GROUP, GROUP // 2]) * s3
        hi3 = tl.reshape(hi, [BLOCK_N, BLOCK_K // GROUP, GROUP // 2]) * s3
        lo = tl.reshape(lo3, [BLOCK_N, BLOCK_K // 2])
        hi = tl.reshape(hi3, [BLOCK_N, BLOCK_K // 2])
    vals = tl.interleave(lo, hi)  # [BLOCK_N, BLOCK_K]: element 2j from lo, 2j + 1 from hi
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    out_mask = mask_n[:, None] & (k < K)[None, :]
    store_as(out_ptr + n.to(tl.int64)[:, None] * K + k[None, :], vals, out_mask, BF16)
