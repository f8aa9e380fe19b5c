"""Fused fake quantization with a given amax: INT and FP8, per tensor or per channel.

One read of ``x`` and one write of the output (the amax vector is tiny and cached). The
tensor is viewed as a contiguous 2-D ``[R, L]`` matrix chosen so the amax index is either
constant (per tensor), the row modulo ``C`` (channel axis with a non-trivial inner extent,
e.g. ``axis=0`` of a weight) or the column (channel axis is the last one, e.g. per-token
amax of ``[tokens, hidden]`` transposed). No integer division per element.

Also the straight-through-estimator backward ``grad * (|x| <= amax)`` with the same layouts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._common import (
    FP8_BY_EXPONENT_BITS,
    MINIFLOATS,
    TINY_AMAX,
    check_input,
    clamp_nan,
    div_exact,
    int_range,
    interpreting,
    launch_options,
    native_fp8,
    rne,
    round_elem,
    store_as,
)
from ._launch import PreparedLaunch

#: Elements per program; the tile is ``BLOCK_R x BLOCK_L`` with ``BLOCK_R * BLOCK_L`` this.
TILE_ELEMS = 8192
NUM_WARPS = 8
#: From this many elements on, offsets are computed in 64 bits (int32 would overflow).
INT64_MIN_NUMEL = 2**31 - 4 * TILE_ELEMS
#: Tile width when the amax runs along the last dim.
COL_TILE_COLS = 128

_MODE_SCALAR, _MODE_ROW, _MODE_COL = 0, 1, 2
_FMT_INT, _FMT_FLOAT = 0, 1


@dataclass(frozen=True)
class _Layout:
    """How to view ``x`` as ``[rows, cols]`` and index ``amax`` (see the module docstring)."""

    mode: int
    rows: int
    cols: int
    channels: int


def _layout(x: torch.Tensor, amax: torch.Tensor) -> _Layout | None:
    """Return the 2-D view for ``x`` and ``amax``, or None if amax does not fit one.

    amax may vary along several dims if they are adjacent and full-size (e.g. per-token amax
    ``[B, T, 1]`` of ``[B, T, H]``): they merge into one channel dim.
    """
    n = x.numel()
    if amax.numel() == 1:
        return _Layout(_MODE_SCALAR, 1, n, 1)
    if amax.dim() > x.dim():
        return None
    shape = (1,) * (x.dim() - amax.dim()) + tuple(amax.shape)
    dims = [d for d, s in enumerate(shape) if s != 1]
    if dims != list(range(dims[0], dims[-1] + 1)):
        return None
    if any(shape[d] != x.shape[d] for d in dims):
        return None
    channels = math.prod(x.shape[d] for d in dims)
    inner = math.prod(x.shape[dims[-1] + 1 :])
    if inner == 1:
        return _Layout(_MODE_COL, n // channels, channels, channels)
    return _Layout(_MODE_ROW, n // inner, inner, channels)


def _tile(layout: _Layout) -> tuple[int, int]:
    if layout.mode == _MODE_SCALAR:
        return 1, TILE_ELEMS
    # per-column amax: several rows per tile so each column's scale is computed once per tile
    cap = COL_TILE_COLS if layout.mode == _MODE_COL else TILE_ELEMS
    block_l = min(triton.next_power_of_2(layout.cols), cap)
    return max(1, TILE_ELEMS // block_l), block_l


@triton.jit
def _load_amax(amax_ptr, rows, cols, R, L, C, MODE: tl.constexpr):
    if MODE == 0:
        a = tl.load(amax_ptr).to(tl.float32)
    elif MODE == 1:
        a = tl.load(amax_ptr + rows % C, mask=rows < R, other=1.0).to(tl.float32)[:, None]
    else:
        a = tl.load(amax_ptr + cols, mask=cols < L, other=1.0).to(tl.float32)[None, :]
    return a


@triton.jit
def _tile_offsets(R, L, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr, INT64: tl.constexpr):
    pid = tl.program_id(0)
    n_l = tl.cdiv(L, BLOCK_L)
    pid_r = pid // n_l
    pid_l = pid % n_l
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    if INT64:
        # a per-tensor view is [1, numel]: column indices pass 2**31 too
        cols = pid_l.to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
        offs = rows.to(tl.int64)[:, None] * L + cols[None, :]
    else:
        cols = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        offs = rows[:, None] * L + cols[None, :]
    mask = (rows < R)[:, None] & (cols < L)[None, :]
    return rows, cols, offs, mask


@triton.jit
def _scaled_fake_quant_kernel(
    x_ptr,
    amax_ptr,
    out_ptr,
    R,
    L,
    C,
    BOUND,
    LO,
    HI,
    MODE: tl.constexpr,
    FMT: tl.constexpr,
    EMIN: tl.constexpr,
    MBITS: tl.constexpr,
    TINY: tl.constexpr,
    BF16: tl.constexpr,
    NATIVE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_L: tl.constexpr,
    INT64: tl.constexpr,
):
    rows, cols, offs, mask = _tile_offsets(R, L, BLOCK_R, BLOCK_L, INT64)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    a = _load_amax(amax_ptr, rows, cols, R, L, C, MODE)
    tiny = a <= TINY
    scale = tl.where(tiny, 1.0, tl.math.div_rn(tl.zeros_like(a) + BOUND, a))
    inv = tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)
    v = clamp_nan(x * scale, LO, HI)
    if FMT == 0:  # noqa: SIM108  (compile-time branch)
        out = div_exact(rne(v), scale, inv)
    else:
        out = round_elem(v, EMIN, MBITS, NATIVE) * inv
    out = tl.where(tiny, 0.0, out)
    store_as(out_ptr + offs, out, mask, BF16)


@triton.jit
def _ste_backward_kernel(
    x_ptr,
    g_ptr,
    amax_ptr,
    out_ptr,
    R,
    L,
    C,
    MODE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_L: tl.constexpr,
    INT64: tl.constexpr,
):
    rows, cols, offs, mask = _tile_offsets(R, L, BLOCK_R, BLOCK_L, INT64)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    a = _load_amax(amax_ptr, rows, cols, R, L, C, MODE)
    out = tl.where(tl.abs(x) <= a, g, tl.zeros_like(g))
    tl.store(out_ptr + offs, out, mask=mask)


def _prepare_scaled(
    x: torch.Tensor,
    amax: torch.Tensor,
    fmt: int,
    bound: float,
    lo: float,
    hi: float,
    emin: int = 0,
    mbits: int = 0,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Resolve everything of a launch but the tensor: ``launch(x_like) -> out``.

    ``x_like`` must be contiguous with ``x``'s numel, dtype and device (its shape may differ:
    the output has ``x_like``'s shape); ``amax`` is bound (its values are read at each
    launch). The compiled kernel is replayed after the first call (:class:`PreparedLaunch`).
    None when the kernel does not take the layout.
    """
    if not check_input(x) or x.numel() == 0:
        return None
    layout = _layout(x, amax)
    if layout is None:
        return None
    amax = amax.to(device=x.device, dtype=torch.float32).contiguous()
    bf16 = x.dtype == torch.bfloat16 and interpreting()
    block_r, block_l = _tile(layout)
    grid = (triton.cdiv(layout.rows, block_r) * triton.cdiv(layout.cols, block_l),)
    scalars = (layout.rows, layout.cols, layout.channels, bound, lo, hi)
    meta = {
        "MODE": layout.mode,
        "FMT": fmt,
        "EMIN": emin,
        "MBITS": mbits,
        "TINY": TINY_AMAX,
        "BF16": bf16,
        "NATIVE": native_fp8(),
        "BLOCK_R": block_r,
        "BLOCK_L": block_l,
        "INT64": x.numel() >= INT64_MIN_NUMEL,
        "num_warps": NUM_WARPS,
        **launch_options(),
    }
    kernel = PreparedLaunch(_scaled_fake_quant_kernel, grid, scalars, meta)

    def launch(xc: torch.Tensor) -> torch.Tensor:
        # the kernel reads flat memory: any contiguous tensor with x's numel, dtype and
        # device works, whatever its shape, and the output takes that shape
        out = torch.empty_like(xc)
        kernel(xc, amax, out.view(torch.int16) if bf16 else out)
        return out

    launch.prepared = kernel  # type: ignore[attr-defined]
    return launch


def _launch_scaled(
    x: torch.Tensor,
    amax: torch.Tensor,
    fmt: int,
    bound: float,
    lo: float,
    hi: float,
    emin: int = 0,
    mbits: int = 0,
) -> torch.Tensor | None:
    launch = _prepare_scaled(x, amax, fmt, bound, lo, hi, emin, mbits)
    return None if launch is None else launch(x.contiguous())


def fake_quant_int(
    x: torch.Tensor, amax: torch.Tensor, num_bits: int, unsigned: bool, narrow_range: bool
) -> torch.Tensor | None:
    """INT fake quant of ``x`` (any shape) with float32 ``amax`` broadcastable to it.

    Returns None when ``amax`` varies along more than one dim or ``x`` has a dtype the kernel
    does not store (the caller then uses the PyTorch path).
    """
    bound, lo, hi = int_range(num_bits, unsigned, narrow_range)
    return _launch_scaled(x, amax, _FMT_INT, bound, lo, hi)


def _prepare_int(
    x: torch.Tensor, amax: torch.Tensor, num_bits: int, unsigned: bool, narrow_range: bool
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    bound, lo, hi = int_range(num_bits, unsigned, narrow_range)
    return _prepare_scaled(x, amax, _FMT_INT, bound, lo, hi)


#: ``fake_quant_int.prepare(x, amax, ...)``: the launch resolved once (see _prepare_scaled).
fake_quant_int.prepare = _prepare_int  # type: ignore[attr-defined]


def fake_quant_fp8(x: torch.Tensor, amax: torch.Tensor, exponent_bits: int) -> torch.Tensor | None:
    """FP8 fake quant (``exponent_bits`` 4: E4M3, 5: E5M2) with amax broadcastable to ``x``."""
    elem = FP8_BY_EXPONENT_BITS.get(exponent_bits)
    if elem is None:
        raise ValueError(f"exponent_bits must be 4 (E4M3) or 5 (E5M2), got {exponent_bits}")
    emin, mbits, fmax = MINIFLOATS[elem]
    return _launch_scaled(x, amax, _FMT_FLOAT, fmax, -fmax, fmax, emin, mbits)


def _prepare_fp8(
    x: torch.Tensor, amax: torch.Tensor, exponent_bits: int
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    elem = FP8_BY_EXPONENT_BITS.get(exponent_bits)
    if elem is None:
        return None
    emin, mbits, fmax = MINIFLOATS[elem]
    return _prepare_scaled(x, amax, _FMT_FLOAT, fmax, -fmax, fmax, emin, mbits)


fake_quant_fp8.prepare = _prepare_fp8  # type: ignore[attr-defined]


def ste_backward(
    x: torch.Tensor, grad_out: torch.Tensor, amax: torch.Tensor
) -> torch.Tensor | None:
    """Masked straight-through gradient ``grad_out * (|x| <= amax)`` in one pass.

    ``grad_out`` has ``x``'s shape (any float dtype); ``amax`` broadcasts like in
    :func:`fake_quant_int`. Returns None for layouts the kernel does not handle.
    """
    if not check_input(x) or x.numel() == 0 or grad_out.shape != x.shape:
        return None
    layout = _layout(x, amax)
    if layout is None:
        return None
    x, grad_out = x.contiguous(), grad_out.contiguous()
    amax = amax.to(device=x.device, dtype=torch.float32).contiguous()
    out = torch.empty_like(grad_out)
    block_r, block_l = _tile(layout)
    grid = (triton.cdiv(layout.rows, block_r) * triton.cdiv(layout.cols, block_l),)
    _ste_backward_kernel[grid](
        x,
        grad_out,
        amax,
        out,
        layout.rows,
        layout.cols,
        layout.channels,
        MODE=layout.mode,
        BLOCK_R=block_r,
        BLOCK_L=block_l,
        INT64=x.numel() >= INT64_MIN_NUMEL,
        num_warps=NUM_WARPS,
        **launch_options(),
    )
    return out
