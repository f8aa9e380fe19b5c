"""W4A16 GEMM/GEMV in Triton: INT4 (per-group scales) or NVFP4 weights, 16-bit activations.

Kernels read the packed bytes (two 4-bit codes per byte, even K index in the low nibble),
decode in registers and accumulate in float32. Decode shapes (``M <= GEMV_MAX_M``, 16-bit
activations) use a GEMV kernel; up to ``FUSED_GEMM_MAX_M`` rows (float32 activations from
one row on) the tiled tensor-core kernel, which dequantizes each weight tile in registers.
Prefill sizes dequantize the weight to a dense 16-bit copy in one pass and call cuBLAS.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ._device import triton_usable
from .registry import GEMM_BACKENDS
from .weights import QuantizedWeight, WeightFormat

#: Largest M served by the GEMV kernel (one program column per activation row, each streaming
#: the whole weight): on an H100 it beats the tile kernel at M <= 2 only (28.8 vs 37.0 us at
#: M = 2, 40.6 vs 37.1 us at M = 3; benchmarks/gpu/results/s4_c8_small_m.log).
GEMV_MAX_M = 2
#: GEMV tile (output rows per program, K per step), warps and pipeline stages: the fastest of
#: a 36-config sweep on an H100 (benchmarks/gpu/NOTES.md): 26.6 us for 8192 x 8192 INT4.
GEMV_BLOCK_N = 4
GEMV_BLOCK_K = 2048
GEMV_WARPS = 4
GEMV_STAGES = 1
#: INT4 decode uses the word-wise kernel (``w4_gemv_words_kernel``: 8 nibbles per int32 load,
#: two weights per pair of integer operations) when the layout allows it; its own tile. The
#: lean decode with a 16 x 2048 tile and 4 warps was the fastest on an H100 (session 4 sweep,
#: benchmarks/gpu/NOTES.md): 17.6 us for 8192 x 8192 INT4 g128 vs 47.4 us for the bf16 GEMV.
GEMV_WORDS = True
GEMV_WORDS_FOLD = True
GEMV_WORDS_X2D = False
GEMV_WORDS_BLOCK_N = 16
GEMV_WORDS_BLOCK_K = 2048
GEMV_WORDS_WARPS = 4
GEMV_WORDS_STAGES = 1
#: Issue the next K step's loads before decoding the current one (manual double buffering).
GEMV_WORDS_PREFETCH = False
#: Split K over this many programs per output block (float32 partials + a reduction kernel)
#: when K divides evenly; 1 = one program per output block over all of K.
GEMV_WORDS_SPLIT_K = 1
#: Software-pipeline the word kernel's K loop over this many stages (asynchronous copies into
#: shared memory, ``tl.range(num_stages=...)``); 1 = no pipelining.
GEMV_WORDS_PIPE = 1
#: Decode with ``_words_step_lean``: ~1/3 fewer instructions per weight pair than the default
#: step (no mask for the high half, no per-row ``sum(x)``, FMAs instead of mul + add).
GEMV_WORDS_LEAN = True
#: INT4 decode over the interleaved word layout (``w4_gemv_ilv_kernel``; activations loaded
#: in the weights' register layout, no shared-memory exchange): needs K and the group size
#: multiples of 128, keeps an interleaved copy of the codes on the weight (``decode_words``).
GEMV_ILV = False
GEMV_ILV_BLOCK_N = 4
GEMV_ILV_BLOCK_K = 1024
GEMV_ILV_WARPS = 4
GEMV_ILV_PREFETCH = False
GEMV_ILV_SCALE2D = False
GEMV_ILV_PIPE = 1
#: INT4 decode on the tensor cores instead (``w4_gemv_dot_kernel``, M padded to 16) where the
#: group size is a multiple of 128; its tile, warps and pipeline depth.
GEMV_DOT = False
GEMV_DOT_BLOCK_N = 64
GEMV_DOT_BLOCK_K = 256
GEMV_DOT_WARPS = 4
GEMV_DOT_STAGES = 4
#: For GEMV_MAX_M < M <= FUSED_GEMM_MAX_M the fused tile kernel (dequantize in registers,
#: tensor-core dots) runs; above it a one-pass Triton dequantization to a dense 16-bit weight
#: and cuBLAS. On an H100 (8192 x 8192 INT4 g128; benchmarks/gpu/results/s4_c7_fused_sweep.log)
#: the fused kernel took 34.9 / 51.3 / 77.0 / 93.1 us at M = 16 / 32 / 64 / 128 against 119-121
#: us for dequantize + cuBLAS, which wins from M = 256 (125 vs 141 us).
FUSED_GEMM_MAX_M = 128
#: Force the fused kernel for every M > GEMV_MAX_M (tests and benchmarks).
FUSED_GEMM = False
#: Fused GEMM tiles by M: the first entry whose bound is >= M (else the last) gives
#: (BLOCK_M, BLOCK_N, BLOCK_K, warps, pipeline stages).
GEMM_TILES: tuple[tuple[int, tuple[int, int, int, int, int]], ...] = (
    (16, (16, 64, 256, 4, 3)),
    (64, (32, 64, 128, 4, 4)),
    (1 << 62, (64, 64, 128, 4, 4)),
)
#: Smallest BLOCK_N the tile kernel narrows to when the grid would leave SMs idle.
GEMM_MIN_BLOCK_N = 32


def _w4_available(x: torch.Tensor, w: QuantizedWeight) -> bool:
    g = w.group_size
    pow2_group = g >= 2 and g & (g - 1) == 0  # Triton tiles have power-of-two extents
    dtype_ok = x.dtype in (torch.float16, torch.bfloat16, torch.float32)
    return triton_usable(x) and dtype_ok and pow2_group


@GEMM_BACKENDS.register(
    "w4a16_triton", (WeightFormat.INT4, WeightFormat.NVFP4), priority=20, available=_w4_available
)
def w4a16_linear(
    x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x [M, K] @ dequant(W).T (+ bias)`` reading W packed; ``[M, N]`` in ``x.dtype``."""
    from ._gemv_kernels import w4_gemv_kernel
    from ._kernels import w4_gemm_kernel

    if x.stride(-1) != 1:
        x = x.contiguous()
    m, k = x.shape
    n = weight.shape[0]
    wfmt = 0 if weight.format == WeightFormat.INT4 else 1
    scales = weight.scale if wfmt == 0 else weight.scale.view(torch.uint8)
    gscale = weight.global_scale if weight.global_scale is not None else scales
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    b = bias if bias is not None else y
    if m <= GEMV_MAX_M and x.dtype != torch.float32 and x.is_contiguous():
        if wfmt == 0 and _words_layout_ok(weight):
            if GEMV_ILV and _ilv_ok(x, weight):
                _gemv_ilv(x, weight, bias, y)
            elif GEMV_DOT and weight.group_size % 128 == 0:
                _gemv_dot(x, weight, bias, y)
            else:
                _gemv_words(x, weight, bias, y)
            return y
        # x as int32 words holding (x[2j], x[2j+1]): loads in the weight tile's layout
        xw = x.view(torch.int32)
        grid = (triton_cdiv(n, GEMV_BLOCK_N), m)
        w4_gemv_kernel[grid](
            xw,
            weight.data,
            scales,
            gscale,
            b,
            y,
            n,
            k,
            xw.stride(0),
            y.stride(0),
            GROUP=weight.group_size,
            WFMT=wfmt,
            HAS_BIAS=bias is not None,
            XBF16=x.dtype == torch.bfloat16,
            BLOCK_N=GEMV_BLOCK_N,
            BLOCK_K=_gemv_block_k(weight.group_size),
            num_warps=GEMV_WARPS,
            num_stages=GEMV_STAGES,
        )
        return y
    if not FUSED_GEMM and m > FUSED_GEMM_MAX_M:
        return F.linear(x, dequantize_w4(weight, x.dtype), bias)
    bm, bn, bk, warps, stages = _gemm_tile(m)
    # narrower column tiles while the grid would leave half the SMs idle (N = 4096 at
    # BLOCK_N = 64: 64 programs for 132 SMs); BLOCK_N = 16 measured slower than idle SMs
    while bn > GEMM_MIN_BLOCK_N and 2 * triton_cdiv(m, bm) * triton_cdiv(n, bn) < _sm_count(x):
        bn //= 2
    if x.dtype == torch.float32:
        # float32 tiles take twice the shared memory per stage
        bk, stages = min(bk, 64), min(stages, 3)
    w4_gemm_kernel[(triton_cdiv(m, bm) * triton_cdiv(n, bn),)](
        x,
        weight.data,
        scales,
        gscale,
        b,
        y,
        m,
        n,
        k,
        x.stride(0),
        y.stride(0),
        GROUP=weight.group_size,
        WFMT=wfmt,
        HAS_BIAS=bias is not None,
        IEEE=x.dtype == torch.float32,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        num_warps=warps,
        num_stages=stages,
    )
    return y


@functools.cache
def _device_sm_count(device: torch.device) -> int:
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


def _sm_count(x: torch.Tensor) -> int:
    """Streaming multiprocessors of ``x``'s GPU (0 off the GPU: no grid-size adjustment)."""
    return _device_sm_count(x.device) if x.is_cuda else 0


def _gemm_tile(m: int) -> tuple[int, int, int, int, int]:
    """The fused GEMM's (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) for ``m`` rows."""
    for bound, tile in GEMM_TILES:
        if m <= bound:
            return tile
    return GEMM_TILES[-1][1]


def _words_layout_ok(weight: QuantizedWeight) -> bool:
    """Packed INT4 rows readable as aligned int32 words, groups of whole words."""
    k = weight.shape[1]
    d = weight.data
    return (
        GEMV_WORDS
        and k % 8 == 0
        and weight.group_size % 8 == 0
        and d.is_contiguous()
        and d.data_ptr() % 4 == 0
    )


def _gemv_words(
    x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None, y: torch.Tensor
) -> None:
    from ._gemv_kernels import w4_gemv_words_kernel

    m, k = x.shape
    n = weight.shape[0]
    g = weight.group_size
    bk = GEMV_WORDS_BLOCK_K
    if g >= bk:
        bk = bk if g % bk == 0 else max(8, _pow2_divisor(g))
    elif bk % g:
        bk = g
    words = weight.data.view(torch.int32)
    bk = max(8, bk)
    kw = k // 8
    split = GEMV_WORDS_SPLIT_K
    if split < 1 or kw % split or (kw // split) % (bk // 8):
        split = 1  # every split must hold whole steps (a step never straddles two splits)
    part = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else y
    w4_gemv_words_kernel[(triton_cdiv(n, GEMV_WORDS_BLOCK_N), m, split)](
        x,
        words,
        weight.scale,
        bias if bias is not None else y,
        y,
        part,
        n,
        k,
        x.stride(0),
        y.stride(0),
        words.stride(0),
        kw // split,
        GROUP=g,
        HAS_BIAS=bias is not None,
        FOLD=GEMV_WORDS_FOLD,
        X2D=GEMV_WORDS_X2D,
        PREFETCH=GEMV_WORDS_PREFETCH,
        SPLIT_K=split,
        BLOCK_N=GEMV_WORDS_BLOCK_N,
        BLOCK_K=bk,
        PIPE=GEMV_WORDS_PIPE,
        LEAN=GEMV_WORDS_LEAN,
        num_warps=GEMV_WORDS_WARPS,
        num_stages=GEMV_WORDS_STAGES,
    )
    if split > 1:
        from ._gemv_kernels import w4_splitk_reduce_kernel

        block = 1024
        w4_splitk_reduce_kernel[(triton_cdiv(n, block), m)](
            part,
            bias if bias is not None else y,
            y,
            n,
            m,
            y.stride(0),
            SPLIT_K=split,
            HAS_BIAS=bias is not None,
            BLOCK=block,
            num_warps=4,
        )


def _ilv_ok(x: torch.Tensor, weight: QuantizedWeight) -> bool:
    """Interleaved GEMV usable: groups/K in 128s, x readable as aligned int32 pairs."""
    k = weight.shape[1]
    return (
        weight.group_size % 128 == 0
        and k % 128 == 0
        and x.dtype in (torch.bfloat16, torch.float16)
        and x.data_ptr() % 16 == 0
        and x.stride(0) % 8 == 0
    )


def _gemv_ilv(
    x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None, y: torch.Tensor
) -> None:
    from ._gemv_kernels import w4_gemv_ilv_kernel
    from .packing import interleave_int4_words

    m, k = x.shape
    n = weight.shape[0]
    words = weight.decode_words
    key = (weight.data.data_ptr(), weight.data._version)  # rebuilt if the codes change
    if words is None or weight.__dict__.get("_decode_key") != key:
        words = interleave_int4_words(weight.data)
        weight.decode_words = words
        weight.__dict__["_decode_key"] = key
    bk = GEMV_ILV_BLOCK_K
    if k % bk or bk % 128 or (bk > weight.group_size and bk % weight.group_size):
        bk = 128
    xw = x.view(torch.int32)
    w4_gemv_ilv_kernel[(triton_cdiv(n, GEMV_ILV_BLOCK_N), m)](
        xw,
        words,
        weight.scale,
        bias if bias is not None else y,
        y,
        n,
        k,
        xw.stride(0),
        y.stride(0),
        words.stride(0),
        GROUP=weight.group_size,
        HAS_BIAS=bias is not None,
        XBF16=x.dtype == torch.bfloat16,
        PREFETCH=GEMV_ILV_PREFETCH,
        SCALE2D=GEMV_ILV_SCALE2D,
        BLOCK_N=GEMV_ILV_BLOCK_N,
        BLOCK_K=bk,
        PIPE=GEMV_ILV_PIPE,
        num_warps=GEMV_ILV_WARPS,
    )


def _gemv_dot(
    x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None, y: torch.Tensor
) -> None:
    from ._gemv_kernels import w4_gemv_dot_kernel

    m, k = x.shape
    n = weight.shape[0]
    g = weight.group_size
    bk = GEMV_DOT_BLOCK_K if GEMV_DOT_BLOCK_K % g == 0 and k % GEMV_DOT_BLOCK_K == 0 else g
    words = weight.data.view(torch.int32)
    w4_gemv_dot_kernel[(triton_cdiv(n, GEMV_DOT_BLOCK_N),)](
        x,
        words,
        weight.scale,
        bias if bias is not None else y,
        y,
        m,
        n,
        k,
        x.stride(0),
        y.stride(0),
        words.stride(0),
        GROUP=g,
        HAS_BIAS=bias is not None,
        BLOCK_M=16,
        BLOCK_N=GEMV_DOT_BLOCK_N,
        BLOCK_K=bk,
        num_warps=GEMV_DOT_WARPS,
        num_stages=GEMV_DOT_STAGES,
    )


def _gemv_block_k(group: int) -> int:
    """K per GEMV step: a multiple of the group (or within one group), at least 32."""
    if group >= GEMV_BLOCK_K:
        return GEMV_BLOCK_K if group % GEMV_BLOCK_K == 0 else max(32, _pow2_divisor(group))
    return GEMV_BLOCK_K if GEMV_BLOCK_K % group == 0 else group


def _pow2_divisor(v: int) -> int:
    return v & -v


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division."""
    return -(-a // b)


def dequantize_w4(weight: QuantizedWeight, dtype: torch.dtype) -> torch.Tensor:
    """Dense ``[N, K]`` weight in ``dtype``, equal to ``weight.dequantize(dtype)`` bit for bit.

    One Triton pass (reads the packed bytes once) where Triton runs, else the PyTorch path.
    """
    if weight.format not in (WeightFormat.INT4, WeightFormat.NVFP4):
        raise ValueError(f"weight: expected an int4 or nvfp4 weight, got {weight.format.value}")
    if not triton_usable(weight.data):
        return weight.dequantize(dtype)
    from ..triton._common import interpreting
    from ._kernels import w4_dequant_kernel

    n, k = weight.shape
    wfmt = 0 if weight.format == WeightFormat.INT4 else 1
    scales = weight.scale if wfmt == 0 else weight.scale.view(torch.uint8)
    gscale = weight.global_scale if weight.global_scale is not None else scales
    out = torch.empty((n, k), dtype=dtype, device=weight.data.device)
    bf16 = dtype == torch.bfloat16 and interpreting()  # see triton/_common.output_for
    buf = out.view(torch.int16) if bf16 else out
    block_k = 256 if weight.group_size < 256 else min(weight.group_size, 1024)
    block_k = min(block_k, weight.group_size) if weight.group_size >= 64 else block_k
    block_n = max(1, 8192 // block_k)
    grid = (triton_cdiv(n, block_n), triton_cdiv(k, block_k))
    w4_dequant_kernel[grid](
        weight.data,
        scales,
        gscale,
        buf,
        n,
        k,
        GROUP=weight.group_size,
        WFMT=wfmt,
        BF16=bf16,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=4,
    )
    return out
