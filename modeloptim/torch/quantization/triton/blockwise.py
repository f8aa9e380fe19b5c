"""Fused fake quantization with per-block scales computed in the kernel (dynamic blocks).

Input is ``x2d`` of shape ``[N, B]``: one block per row (the caller pads and reshapes). A
program loads a ``[BLOCK_N, B]`` tile once, reduces each row's amax in registers, quantizes
and writes once: the same bytes as a copy. Formats (DESIGN.md §2, "Numerics to pin"):

* INT dynamic block (e.g. INT4 block 128): the INT rule with the row's amax.
* FP8 dynamic block: the FP8 rule with the row's amax.
* NVFP4 (``B = 16``): two-level scales, ``scale_2 = global_amax / 2688``, FP8 E4M3 block
  scale, E2M1 elements; a global amax ``<= 2**-24`` gives zeros.
* MX (``B = 32``): E8M0 shared exponent ``ceil(log2(block_amax / elem_max))`` floored at
  -127 and capped at 127 (computed exactly from bits), elements E4M3/E5M2/E3M2/E2M3/E2M1 or
  INT8 (codes in [-127, 127] times ``2**-6``, so ``elem_max = 127/64``). A block holding NaN
  comes out all NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from ._common import (
    FP8_BY_EXPONENT_BITS,
    MINIFLOATS,
    TINY_AMAX,
    ceil_log2,
    check_input,
    clamp_nan,
    div_exact,
    int_range,
    interpreting,
    launch_options,
    max_nan,
    native_fp8,
    pow2,
    rne,
    round_elem,
    store_as,
)
from ._launch import PreparedLaunch

#: Elements per program (rows x padded block width).
TILE_ELEMS = 8192
NUM_WARPS = 8
#: From this many elements on, offsets are computed in 64 bits (int32 would overflow).
INT64_MIN_NUMEL = 2**31 - 4 * TILE_ELEMS
#: Widest block handled in registers; wider blocks fall back to the PyTorch path.
MAX_BLOCK = 16384

_FMT_INT, _FMT_FLOAT, _FMT_NVFP4, _FMT_MX = 0, 1, 2, 3

#: MX element name -> (min normal exponent, mantissa bits, max value, is int8).
_MX_ELEMS: dict[str, tuple[int, int, float, bool]] = {
    **{k: (v[0], v[1], v[2], False) for k, v in MINIFLOATS.items()},
    "int8": (0, 0, 127.0 / 64.0, True),
}


@triton.jit
def _pow2_wide(e):
    """``2.0**e`` for integer ``e`` in [-127, 127]; -127 is the float32 subnormal 2**-127."""
    sub = (tl.zeros_like(e) + 0x400000).to(tl.uint32).to(tl.float32, bitcast=True)
    return tl.where(e >= -126, pow2(tl.maximum(e, -126)), sub)


@triton.jit
def _block_fake_quant_kernel(
    x_ptr,
    gamax_ptr,
    out_ptr,
    N,
    B,
    BOUND,
    LO,
    HI,
    FMT: tl.constexpr,
    EMIN: tl.constexpr,
    MBITS: tl.constexpr,
    MX_INT8: tl.constexpr,
    TINY: tl.constexpr,
    BF16: tl.constexpr,
    NATIVE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_B: tl.constexpr,
    INT64: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_B)
    if INT64:
        offs = rows.to(tl.int64)[:, None] * B + cols[None, :]
    else:
        offs = rows[:, None] * B + cols[None, :]
    mask = (rows < N)[:, None] & (cols < B)[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    bamax = tl.reduce(tl.abs(x), 1, max_nan)[:, None]
    if FMT == 0 or FMT == 1:
        tiny = bamax <= TINY
        scale = tl.where(tiny, 1.0, tl.math.div_rn(tl.zeros_like(bamax) + BOUND, bamax))
        inv = tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)
        v = clamp_nan(x * scale, LO, HI)
        if FMT == 0:
            out = div_exact(rne(v), scale, inv)
        else:
            out = round_elem(v, EMIN, MBITS, NATIVE) * inv
        out = tl.where(tiny, 0.0, out)
    elif FMT == 2:
        ga = tl.load(gamax_ptr).to(tl.float32)
        scale_2 = tl.math.div_rn(ga, 2688.0)
        s = tl.math.div_rn(bamax, tl.zeros_like(bamax) + 6.0 * scale_2)
        s = tl.where(s == 0.0, 1.0, s)
        s = round_elem(clamp_nan(s, 0.001953125, 448.0), -6, 3, NATIVE)
        d = s * scale_2
        q = round_elem(clamp_nan(tl.math.div_rn(x, d), -6.0, 6.0), 0, 1, NATIVE)
        out = q * d
        out = tl.where(ga <= TINY, 0.0, out)
    else:
        r = tl.math.div_rn(bamax, tl.zeros_like(bamax) + HI)
        e = tl.minimum(tl.maximum(ceil_log2(r), -127), 127)
        v = x * _pow2_wide(-e)
        if MX_INT8:
            q = rne(clamp_nan(v * 64.0, -127.0, 127.0)) * 0.015625
        else:
            q = round_elem(clamp_nan(v, LO, HI), EMIN, MBITS, NATIVE)
        out = tl.where(bamax != bamax, float("nan"), q * _pow2_wide(e))
    store_as(out_ptr + offs, out, mask, BF16)


def _prepare_block(
    x2d: torch.Tensor,
    fmt: int,
    bound: float = 0.0,
    lo: float = 0.0,
    hi: float = 0.0,
    emin: int = 0,
    mbits: int = 0,
    mx_int8: bool = False,
    global_amax: torch.Tensor | None = None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Resolve everything of a launch but the tensor: ``launch(x2d_like) -> out``.

    ``x2d_like`` must be contiguous with ``x2d``'s numel, dtype and device (the output takes
    its shape); after the first call the compiled kernel is replayed (:class:`PreparedLaunch`).
    """
    if not check_input(x2d) or x2d.dim() != 2 or x2d.numel() == 0:
        return None
    n, b = x2d.shape
    if b > MAX_BLOCK:
        return None
    bf16 = x2d.dtype == torch.bfloat16 and interpreting()
    block_b = triton.next_power_of_2(b)
    block_n = max(1, TILE_ELEMS // block_b)
    gamax = None if global_amax is None else global_amax.to(x2d.device, torch.float32)
    scalars = (n, b, bound, lo, hi)
    meta = {
        "FMT": fmt,
        "EMIN": emin,
        "MBITS": mbits,
        "MX_INT8": mx_int8,
        "TINY": TINY_AMAX,
        "BF16": bf16,
        "NATIVE": native_fp8(),
        "BLOCK_N": block_n,
        "BLOCK_B": block_b,
        "INT64": x2d.numel() >= INT64_MIN_NUMEL,
        "num_warps": NUM_WARPS,
        **launch_options(),
    }
    kernel = PreparedLaunch(_block_fake_quant_kernel, (triton.cdiv(n, block_n),), scalars, meta)

    def launch(xc: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(xc)
        g = xc if gamax is None else gamax  # unused pointer when there is no global amax
        kernel(xc, g, out.view(torch.int16) if bf16 else out)
        return out

    launch.prepared = kernel  # type: ignore[attr-defined]
    return launch


def _launch_block(
    x2d: torch.Tensor,
    fmt: int,
    bound: float = 0.0,
    lo: float = 0.0,
    hi: float = 0.0,
    emin: int = 0,
    mbits: int = 0,
    mx_int8: bool = False,
    global_amax: torch.Tensor | None = None,
) -> torch.Tensor | None:
    launch = _prepare_block(x2d, fmt, bound, lo, hi, emin, mbits, mx_int8, global_amax)
    return None if launch is None else launch(x2d.contiguous())


def fake_quant_int_dynamic_block(
    x2d: torch.Tensor, num_bits: int, unsigned: bool, narrow_range: bool
) -> torch.Tensor | None:
    """INT fake quant of each row of ``x2d`` (``[N, B]``) with the row's own amax."""
    bound, lo, hi = int_range(num_bits, unsigned, narrow_range)
    return _launch_block(x2d, _FMT_INT, bound, lo, hi)


def _prepare_int_dynamic_block(
    x2d: torch.Tensor, num_bits: int, unsigned: bool, narrow_range: bool
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    bound, lo, hi = int_range(num_bits, unsigned, narrow_range)
    return _prepare_block(x2d, _FMT_INT, bound, lo, hi)


#: ``fake_quant_int_dynamic_block.prepare(x2d, ...)``: the launch resolved once.
fake_quant_int_dynamic_block.prepare = _prepare_int_dynamic_block  # type: ignore[attr-defined]


def fake_quant_fp8_dynamic_block(x2d: torch.Tensor, exponent_bits: int) -> torch.Tensor | None:
    """FP8 fake quant of each row of ``x2d`` (``[N, B]``) with the row's own amax."""
    elem = FP8_BY_EXPONENT_BITS.get(exponent_bits)
    if elem is None:
        raise ValueError(f"exponent_bits must be 4 (E4M3) or 5 (E5M2), got {exponent_bits}")
    emin, mbits, fmax = MINIFLOATS[elem]
    return _launch_block(x2d, _FMT_FLOAT, fmax, -fmax, fmax, emin, mbits)


def _prepare_fp8_dynamic_block(
    x2d: torch.Tensor, exponent_bits: int
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    elem = FP8_BY_EXPONENT_BITS.get(exponent_bits)
    if elem is None:
        return None
    emin, mbits, fmax = MINIFLOATS[elem]
    return _prepare_block(x2d, _FMT_FLOAT, fmax, -fmax, fmax, emin, mbits)


#: ``fake_quant_fp8_dynamic_block.prepare(x2d, exponent_bits)``: the launch resolved once.
fake_quant_fp8_dynamic_block.prepare = _prepare_fp8_dynamic_block  # type: ignore[attr-defined]


def fake_quant_nvfp4(x2d: torch.Tensor, global_amax: torch.Tensor) -> torch.Tensor | None:
    """NVFP4 fake quant of ``x2d`` (``[N, 16]``) given the 0-d float32 ``global_amax``."""
    if x2d.dim() != 2 or x2d.shape[-1] != 16 or global_amax.numel() != 1:
        return None
    return _launch_block(x2d, _FMT_NVFP4, global_amax=global_amax.reshape(()))


def _prepare_nvfp4(
    x2d: torch.Tensor, global_amax: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if x2d.dim() != 2 or x2d.shape[-1] != 16 or global_amax.numel() != 1:
        return None
    return _prepare_block(x2d, _FMT_NVFP4, global_amax=global_amax.reshape(()))


#: ``fake_quant_nvfp4.prepare(x2d, global_amax)``: the launch resolved once.
fake_quant_nvfp4.prepare = _prepare_nvfp4  # type: ignore[attr-defined]


def fake_quant_mx(x2d: torch.Tensor, elem: str) -> torch.Tensor | None:
    """MX fake quant of ``x2d`` (``[N, 32]``); ``elem`` in e4m3/e5m2/e3m2/e2m3/e2m1/int8."""
    spec = _MX_ELEMS.get(elem)
    if spec is None:
        raise ValueError(f"elem must be one of {sorted(_MX_ELEMS)}, got {elem!r}")
    if x2d.dim() != 2 or x2d.shape[-1] != 32:
        return None
    emin, mbits, emax, is_int8 = spec
    return _launch_block(x2d, _FMT_MX, 0.0, -emax, emax, emin, mbits, is_int8)


def _prepare_mx(x2d: torch.Tensor, elem: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    spec = _MX_ELEMS.get(elem)
    if spec is None or x2d.dim() != 2 or x2d.shape[-1] != 32:
        return None
    emin, mbits, emax, is_int8 = spec
    return _prepare_block(x2d, _FMT_MX, 0.0, -emax, emax, emin, mbits, is_int8)


#: ``fake_quant_mx.prepare(x2d, elem)``: the launch resolved once.
fake_quant_mx.prepare = _prepare_mx  # type: ignore[attr-defined]
