# ruff: noqa: N803, N806  (Triton kernels: constexpr parameters are upper case by convention)
"""Triton W4A16 decode kernels (GEMV, a few activation rows; imported lazily: needs Triton).

* ``w4_gemv_kernel``: decode-time ``y[m] = W x[m]`` for packed 4-bit weights (INT4 with
  per-group scales, or NVFP4 E2M1 with FP8 per-16 scales and a global scale). Memory bound:
  it streams the packed weight once (half a byte per weight), unpacks in registers and
  accumulates in float32; one program owns ``BLOCK_N`` output rows over all of K.
* ``w4_gemv_words_kernel``: the INT4 GEMV reading 8 nibbles per int32 word and converting
  two at a time through bfloat16 bit patterns (``_words_step``, or ``_words_step_lean``
  with about a third fewer instructions per weight pair, the default).
* ``w4_gemv_ilv_kernel``: the INT4 GEMV over an interleaved word layout whose activations
  load in the weight tile's register layout (off by default).
* ``w4_gemv_dot_kernel``: the INT4 GEMV on tensor cores, M padded to 16 (off by default).
* ``w4_splitk_reduce_kernel``: sums split-K float32 partials, adds the bias.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._w4_decode import _load_scales, _split_pair, _unpack


@triton.jit
def w4_gemv_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    gs_ptr,
    b_ptr,
    y_ptr,
    N,
    K,
    stride_xm,
    stride_ym,
    GROUP: tl.constexpr,
    WFMT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    XBF16: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = n < N
    j = tl.arange(0, BLOCK_K // 2)
    half_k = K // 2
    NG = K // GROUP
    w_row = w_ptr + n.to(tl.int64)[:, None] * half_k
    zero_rows = tl.zeros([BLOCK_N, 1], dtype=tl.int32)
    # accumulate element-wise and reduce once at the end: no cross-thread sums in the loop
    if BLOCK_K <= GROUP:
        acc = tl.zeros([BLOCK_N, BLOCK_K // 2], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_K // GROUP], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        jj = k0 // 2 + j
        mask_j = jj < half_k
        mask = mask_n[:, None] & mask_j[None, :]
        p = tl.load(w_row + jj[None, :], mask=mask, other=0).to(tl.int32)
        # x viewed as int32 pairs (x[2j], x[2j+1]); a 2-D pointer gives it the weight tile's
        # register layout, so no shared-memory layout conversion happens inside the loop
        xp = tl.load(x_ptr + m * stride_xm + (jj[None, :] + zero_rows), mask=mask, other=0)
        xe, xo = _split_pair(xp, XBF16)
        lo, hi = _unpack(p, WFMT)
        prod = lo * xe + hi * xo
        if BLOCK_K <= GROUP:
            # the whole step lies in one scale group: one scale per row
            s = _load_scales(s_ptr, n * NG + k0 // GROUP, mask_n, WFMT)
            acc += prod * s[:, None]
        else:
            part = tl.sum(tl.reshape(prod, [BLOCK_N, BLOCK_K // GROUP, GROUP // 2]), axis=2)
            g = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
            s_mask = mask_n[:, None] & (g < NG)[None, :]
            acc += part * _load_scales(s_ptr, n[:, None] * NG + g[None, :], s_mask, WFMT)
    out = tl.sum(acc, axis=1)
    if WFMT == 1:
        out = out * tl.load(gs_ptr).to(tl.float32)
    if HAS_BIAS:
        out += tl.load(b_ptr + n, mask=mask_n, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + n, out.to(y_ptr.dtype.element_ty), mask=mask_n)


@triton.jit
def _words_scales(s_ptr, n, mask_n, kw0, NG, GROUP: tl.constexpr, BLOCK_K: tl.constexpr):
    """Group scales of the step starting at word ``kw0``: ``[BLOCK_N]`` or ``[BLOCK_N, G]``."""
    if BLOCK_K <= GROUP:
        sc = tl.load(s_ptr + n * NG + (kw0 * 8) // GROUP, mask=mask_n, other=0.0)
    else:
        g = (kw0 * 8) // GROUP + tl.arange(0, BLOCK_K // GROUP)
        s_mask = mask_n[:, None] & (g < NG)[None, :]
        sc = tl.load(s_ptr + n[:, None] * NG + g[None, :], mask=s_mask, other=0.0)
    return sc.to(tl.float32)


@triton.jit
def _words_step(
    w,
    sc,
    acc,
    x_row,
    kw,
    mask_w,
    GROUP: tl.constexpr,
    FOLD: tl.constexpr,
    X2D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """``acc`` plus one K step of the word GEMV.

    Decodes the ``[BLOCK_N, BLOCK_K / 8]`` words ``w`` (see ``w4_gemv_words_kernel``),
    multiplies with x and scales by the step's group scales ``sc``.
    """
    BW: tl.constexpr = BLOCK_K // 8
    zero_rows = tl.zeros([BLOCK_N, 1], dtype=tl.int32)
    w = w ^ -2004318072  # 0x88888888: every nibble to its offset-8 code
    prod = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
    xsum = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
    for s in tl.static_range(4):
        t = ((w >> (4 * s)) & 0x000F000F) | 0x43004300
        f_lo = (t << 16).to(tl.float32, bitcast=True)
        f_hi = (t & -65536).to(tl.float32, bitcast=True)
        if X2D:
            xo = x_row + (kw * 8)[None, :] + zero_rows
            xm = mask_w[None, :] & (zero_rows == 0)
            x_lo = tl.load(xo + s, mask=xm, other=0.0).to(tl.float32)
            x_hi = tl.load(xo + (s + 4), mask=xm, other=0.0).to(tl.float32)
        else:
            x_lo = tl.load(x_row + kw * 8 + s, mask=mask_w, other=0.0).to(tl.float32)
            x_hi = tl.load(x_row + kw * 8 + (s + 4), mask=mask_w, other=0.0).to(tl.float32)
            x_lo = x_lo[None, :]
            x_hi = x_hi[None, :]
        if FOLD:
            prod += f_lo * x_lo + f_hi * x_hi
            xsum += x_lo + x_hi
        else:
            prod += (f_lo - 136.0) * x_lo + (f_hi - 136.0) * x_hi
    if FOLD:
        prod = prod - 136.0 * xsum
    if BLOCK_K <= GROUP:
        acc += prod * sc[:, None]
    else:
        acc += tl.sum(tl.reshape(prod, [BLOCK_N, BLOCK_K // GROUP, GROUP // 8]), axis=2) * sc
    return acc


@triton.jit
def _words_step_lean(
    w,
    sc,
    acc,
    x_row,
    kw,
    mask_w,
    GROUP: tl.constexpr,
    X2D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """``_words_step`` with about half the instructions per weight pair (``LEAN``).

    ``t = ((w ^ 0x88888888) >> 4s) & 0x000F000F | 0x43004300`` as before. The low element
    is ``f_lo = bitcast(t << 16) = 128 + c_lo``; the high one is ``t`` read as a float32
    *without* masking its low half: ``bitcast(t) = 128 + c_hi + (0x4300 + c_lo) / 2**16
    = f_hi + (17024 + f_lo) / 2**16``. The ``f_lo / 2**16`` cross term is cancelled by
    using ``x_lo' = x_lo - x_hi / 2**16`` for the low element (computed once per activation
    column, shared by every weight row; exact in float32 to 2**-24 relative), so
    ``f_lo * x_lo' + bitcast(t) * x_hi = f_lo * x_lo + f_hi * x_hi + 17024 / 2**16 * x_hi``
    and the constant is folded with the ``- 136`` into one per-column correction
    ``136 * x_lo + (136 + 17024 / 2**16) * x_hi``. Per pair that leaves a shift, one LOP3,
    one shift and two FMAs (the default step also masks ``t``, multiplies, and accumulates
    ``sum(x)`` per weight row).
    """
    BW: tl.constexpr = BLOCK_K // 8
    w = w ^ -2004318072  # 0x88888888: every nibble to its offset-8 code
    prod = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
    corr = tl.zeros([BW], dtype=tl.float32)
    for s in tl.static_range(4):
        t = ((w >> (4 * s)) & 0x000F000F) | 0x43004300
        f_lo = (t << 16).to(tl.float32, bitcast=True)
        f_hi = t.to(tl.float32, bitcast=True)
        if X2D:
            x_lo = tl.load(x_row + (kw * 8 + s)[None, :], mask=mask_w[None, :], other=0.0)
            x_hi = tl.load(x_row + (kw * 8 + s + 4)[None, :], mask=mask_w[None, :], other=0.0)
            x_lo = x_lo.to(tl.float32)
            x_hi = x_hi.to(tl.float32)
            corr += tl.sum(x_lo * 136.0 + x_hi * 136.259765625, axis=0)
            prod = tl.fma(f_lo, x_lo - x_hi * 1.52587890625e-05, prod)
            prod = tl.fma(f_hi, x_hi, prod)
        else:
            x_lo = tl.load(x_row + kw * 8 + s, mask=mask_w, other=0.0).to(tl.float32)
            x_hi = tl.load(x_row + kw * 8 + (s + 4), mask=mask_w, other=0.0).to(tl.float32)
            corr += x_lo * 136.0 + x_hi * 136.259765625
            prod = tl.fma(f_lo, (x_lo - x_hi * 1.52587890625e-05)[None, :], prod)
            prod = tl.fma(f_hi, x_hi[None, :], prod)
    if BLOCK_K <= GROUP:
        acc += (prod - corr[None, :]) * sc[:, None]
    else:
        part = tl.sum(tl.reshape(prod, [BLOCK_N, BLOCK_K // GROUP, GROUP // 8]), axis=2)
        cg = tl.sum(tl.reshape(corr, [BLOCK_K // GROUP, GROUP // 8]), axis=1)
        acc += (part - cg[None, :]) * sc
    return acc


@triton.jit
def w4_gemv_words_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    b_ptr,
    y_ptr,
    part_ptr,
    N,
    K,
    stride_xm,
    stride_ym,
    stride_wn,
    kw_split,
    GROUP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    FOLD: tl.constexpr,
    X2D: tl.constexpr,
    PREFETCH: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PIPE: tl.constexpr = 1,
    LEAN: tl.constexpr = False,
):
    """INT4 decode GEMV reading the packed weight as int32 words (8 nibbles each).

    Nibble ``p`` of word ``w`` (bits ``4p..4p+3``) is element ``8 * word + p``. With
    ``t = ((w ^ 0x88888888) >> 4s) & 0x000F000F | 0x43004300`` the two 16-bit halves of ``t``
    are the bfloat16 numbers ``128 + (nibble ^ 8)`` of elements ``s`` and ``s + 4``; the halves
    become float32 by one shift or one mask, and minus 136 they are the signed INT4 values,
    exactly. That is 2 integer operations per pair of weights instead of 4-5 per weight.
    ``FOLD`` moves the ``- 136`` out of the inner products: ``sum((f - 136) * x) =
    sum(f * x) - 136 * sum(x)`` per step (float32; relative error ~1e-5, far below the 16-bit
    output rounding). ``X2D`` loads x through a ``[BLOCK_N, BW]`` pointer equal in every row
    (the weight tile's layout: no shared-memory exchange, but one load per row); otherwise x
    is loaded once as 1-D vectors and moved to that layout through shared memory.

    ``PREFETCH`` issues the next step's weight and scale loads before decoding the current
    step (Triton does not software-pipeline loads that feed no ``tl.dot``), so a load is in
    flight while the previous words are decoded. ``SPLIT_K > 1``: program ``(i, m, j)`` sums
    the word range ``[j * kw_split, (j + 1) * kw_split)`` only and writes its float32 partial
    to ``part[j, m, n]``; ``w4_splitk_reduce_kernel`` adds the partials and the bias.
    ``PIPE > 1`` software-pipelines the K loop over that many stages (``tl.range``: Triton
    stages every load of the loop through shared memory with asynchronous copies, so
    ``PIPE - 1`` steps' weights are in flight while one is decoded). ``LEAN`` decodes with
    ``_words_step_lean`` (fewer instructions per pair; ``FOLD`` is implied).
    """
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = n < N
    BW: tl.constexpr = BLOCK_K // 8
    jw = tl.arange(0, BW)
    NG = K // GROUP
    # stride_wn (= K / 8) and kw_split are their own arguments so that Triton specializes them
    # on divisibility by 16: row starts and step bounds known 16-byte aligned, word loads
    # become 16-byte vectors and the masks stay constant over 4-word vectors
    if SPLIT_K == 1:
        k_lo = 0
        k_hi = stride_wn
    else:
        k_lo = tl.program_id(2) * kw_split
        k_hi = k_lo + kw_split
    w_row = w_ptr + n.to(tl.int64)[:, None] * stride_wn
    x_row = x_ptr + m * stride_xm
    if BLOCK_K <= GROUP:
        acc = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_K // GROUP], dtype=tl.float32)
    if PREFETCH:
        kn = k_lo + jw
        w_next = tl.load(w_row + kn[None, :], mask=mask_n[:, None] & (kn < k_hi)[None, :], other=0)
        s_next = _words_scales(s_ptr, n, mask_n, k_lo, NG, GROUP, BLOCK_K)
    # a word-index loop variable keeps the alignment visible
    for kw0 in tl.range(k_lo, k_hi, BW, num_stages=PIPE):
        kw = kw0 + jw
        mask_w = kw < k_hi
        if PREFETCH:
            w = w_next
            sc = s_next
            kn = kw + BW
            nxt = (n * 0 + (kw0 + BW)) < k_hi  # a tensor: the interpreter masks by tensors
            w_next = tl.load(
                w_row + kn[None, :], mask=mask_n[:, None] & (kn < k_hi)[None, :], other=0
            )
            s_next = _words_scales(s_ptr, n, mask_n & nxt, kw0 + BW, NG, GROUP, BLOCK_K)
        else:
            w = tl.load(w_row + kw[None, :], mask=mask_n[:, None] & mask_w[None, :], other=0)
            sc = _words_scales(s_ptr, n, mask_n, kw0, NG, GROUP, BLOCK_K)
        if LEAN:
            acc = _words_step_lean(w, sc, acc, x_row, kw, mask_w, GROUP, X2D, BLOCK_N, BLOCK_K)
        else:
            acc = _words_step(w, sc, acc, x_row, kw, mask_w, GROUP, FOLD, X2D, BLOCK_N, BLOCK_K)
    out = tl.sum(acc, axis=1)
    if SPLIT_K == 1:
        if HAS_BIAS:
            out += tl.load(b_ptr + n, mask=mask_n, other=0.0).to(tl.float32)
        tl.store(y_ptr + m * stride_ym + n, out.to(y_ptr.dtype.element_ty), mask=mask_n)
    else:
        rows = tl.num_programs(1)
        tl.store(part_ptr + (tl.program_id(2) * rows + m) * N + n, out, mask=mask_n)


@triton.jit
def w4_gemv_ilv_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    b_ptr,
    y_ptr,
    N,
    K,
    stride_xm,
    stride_ym,
    stride_wn,
    GROUP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    XBF16: tl.constexpr,
    PREFETCH: tl.constexpr,
    SCALE2D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PIPE: tl.constexpr = 1,
):
    """INT4 decode GEMV over the interleaved word layout (``packing.interleave_int4_words``).

    ``x_ptr`` is the activation row viewed as int32 words, word ``i`` holding elements
    ``2i`` and ``2i + 1``. For nibble pair ``s``, weight word ``c`` (block ``c // 16``,
    ``j = c % 16``) holds the elements of activation word ``64 (c // 16) + 16 s + j``: for
    a fixed ``s`` those are consecutive along ``c``, so x is loaded through a pointer tile
    of the weight tile's shape (equal in every row) and gets the weight tile's register
    layout with 16-byte vector loads, instead of 1-D loads moved through shared memory with
    a barrier per load (the word kernel's per-step cost). Decode as in
    ``w4_gemv_words_kernel``: ``((w ^ 0x88888888) >> 4s) & 0x000F000F | 0x43004300`` holds
    two bfloat16 numbers ``128 + code``, minus 136 the INT4 values; the ``- 136`` is folded
    into one ``136 * sum(x)`` per step. ``GROUP`` and ``BLOCK_K`` are multiples of 128.
    ``PREFETCH`` loads the next step's weight words and scales before decoding the current
    step (manual double buffering; past the last step the loads are masked off).
    ``SCALE2D`` loads the group scales as a tile of the weight tile's shape (each column's
    group scale, cached loads) and accumulates ``prod * scale`` element-wise, instead of
    per-step group sums through a reshape (which moves data between layouts each step).
    ``PIPE > 1``: the K loop software-pipelined over that many stages (as the word kernel).
    """
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = n < N
    BW: tl.constexpr = BLOCK_K // 8
    jw = tl.arange(0, BW)
    NG = K // GROUP
    w_row = w_ptr + n.to(tl.int64)[:, None] * stride_wn
    x_row = x_ptr + m * stride_xm
    zero_rows = tl.zeros([BLOCK_N, 1], dtype=tl.int32)
    if BLOCK_K <= GROUP or SCALE2D:
        acc = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_K // GROUP], dtype=tl.float32)
    s_row = s_ptr + n[:, None] * NG
    if PREFETCH:
        w_next = tl.load(w_row + jw[None, :], mask=mask_n[:, None], other=0)
        if SCALE2D:
            s_next = tl.load(s_row + ((jw * 8) // GROUP)[None, :], mask=mask_n[:, None], other=0.0)
        else:
            s_next = _words_scales(s_ptr, n, mask_n, 0, NG, GROUP, BLOCK_K)
    for kw0 in tl.range(0, stride_wn, BW, num_stages=PIPE):
        c = kw0 + jw
        if PREFETCH:
            w = w_next
            sc = s_next
            more = (n * 0 + (kw0 + BW)) < stride_wn  # a tensor: the interpreter masks by tensors
            w_next = tl.load(w_row + (c + BW)[None, :], mask=(mask_n & more)[:, None], other=0)
            if SCALE2D:
                s_next = tl.load(
                    s_row + (((c + BW) * 8) // GROUP)[None, :],
                    mask=(mask_n & more)[:, None],
                    other=0.0,
                )
            else:
                s_next = _words_scales(s_ptr, n, mask_n & more, kw0 + BW, NG, GROUP, BLOCK_K)
        else:
            w = tl.load(w_row + c[None, :], mask=mask_n[:, None], other=0)
            if SCALE2D:
                sc = tl.load(s_row + ((c * 8) // GROUP)[None, :], mask=mask_n[:, None], other=0.0)
            else:
                sc = _words_scales(s_ptr, n, mask_n, kw0, NG, GROUP, BLOCK_K)
        w = w ^ -2004318072  # 0x88888888: every nibble to its offset-8 code
        xc = (c // 16) * 64 + c % 16  # activation word of pair s = 0
        prod = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
        xsum = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
        for s in tl.static_range(4):
            xw = tl.load(x_row + (xc + 16 * s)[None, :] + zero_rows)
            x_lo, x_hi = _split_pair(xw, XBF16)
            t = ((w >> (4 * s)) & 0x000F000F) | 0x43004300
            f_lo = (t << 16).to(tl.float32, bitcast=True)
            f_hi = (t & -65536).to(tl.float32, bitcast=True)
            prod += f_lo * x_lo + f_hi * x_hi
            xsum += x_lo + x_hi
        prod = prod - 136.0 * xsum
        if SCALE2D:
            acc += prod * sc.to(tl.float32)
        elif BLOCK_K <= GROUP:
            acc += prod * sc[:, None]
        else:
            acc += tl.sum(tl.reshape(prod, [BLOCK_N, BLOCK_K // GROUP, GROUP // 8]), axis=2) * sc
    out = tl.sum(acc, axis=1)
    if HAS_BIAS:
        out += tl.load(b_ptr + n, mask=mask_n, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + n, out.to(y_ptr.dtype.element_ty), mask=mask_n)


@triton.jit
def w4_gemv_dot_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    b_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_ym,
    stride_wn,
    GROUP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """INT4 decode GEMV on the tensor cores: ``y[:M] = x[:M] @ W.T`` with M padded to 16.

    The words of one scale group (``GROUP / 8`` per row) hold 8 nibbles each; nibble ``p``
    of word ``j`` is element ``8 j + p``. Since a dot product does not depend on the order of
    its terms, each group is eight dots over ``j``: ``sum_p x[8j + p] . q_p[n, j]`` with the
    codes of nibble ``p`` as exact 16-bit integers, accumulated in float32 by the MMA unit,
    then scaled by the group's scale in float32. Using ``tl.dot`` also lets Triton pipeline
    the weight loads (``num_stages``), which it does not do for loads feeding no dot.
    ``BLOCK_K`` is a multiple of ``GROUP``; ``GROUP / 8 >= 16`` (the MMA's K).
    """
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = n < N
    rm = tl.arange(0, BLOCK_M)
    mask_m = rm < M
    GW: tl.constexpr = GROUP // 8
    jw = tl.arange(0, GW)
    NG = K // GROUP
    w_row = w_ptr + n.to(tl.int64)[:, None] * stride_wn
    x_rows = x_ptr + rm[:, None] * stride_xm
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for kw0 in range(0, stride_wn, BLOCK_K // 8):
        for gi in tl.static_range(BLOCK_K // GROUP):
            kw = kw0 + gi * GW + jw
            w = tl.load(w_row + kw[None, :], mask=mask_n[:, None], other=0)
            w = w ^ -2004318072  # 0x88888888: offset-8 codes, code - 8 is the INT4 value
            part = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for p in tl.static_range(8):
                q = (((w >> (4 * p)) & 15) - 8).to(x_ptr.dtype.element_ty)
                xp = tl.load(x_rows + (kw * 8 + p)[None, :], mask=mask_m[:, None], other=0.0)
                part = tl.dot(xp, tl.trans(q), part)
            g = (kw0 * 8) // GROUP + gi
            sc = tl.load(s_ptr + n * NG + g, mask=mask_n, other=0.0).to(tl.float32)
            acc += part * sc[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + rm[:, None] * stride_ym + n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def w4_splitk_reduce_kernel(
    part_ptr,
    b_ptr,
    y_ptr,
    N,
    M,
    stride_ym,
    SPLIT_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``y[m, n] = sum_j part[j, m, n] (+ bias[n])``, the splits added in order j = 0, 1..."""
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = tl.program_id(1)
    mask = n < N
    out = tl.zeros([BLOCK], dtype=tl.float32)
    for j in tl.static_range(SPLIT_K):
        out += tl.load(part_ptr + (j * M + m) * N + n, mask=mask, other=0.0)
    if HAS_BIAS:
        out += tl.load(b_ptr + n, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + n, out.to(y_ptr.dtype.element_ty), mask=mask)
