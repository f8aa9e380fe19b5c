"""Shared Triton device helpers and launch utilities for the fake-quant kernels.

Numerics (see DESIGN.md §2 and the "Numerics to pin" list): every kernel computes in float32,
divides with IEEE round-to-nearest (``tl.math.div_rn``; plain ``/`` in Triton is an approximate
division on NVIDIA GPUs) and rounds half to even. Rounding uses the ``1.5 * 2**23`` magic-number
trick on the magnitude (exact for magnitudes below ``2**22``, which every caller guarantees by
clamping first) and then restores the sign bit, so ``-0.3`` rounds to ``-0.0`` like
``torch.round``. Minifloat rounding (FP8 E4M3/E5M2, FP6 E3M2/E2M3, FP4 E2M1) snaps to the
format's grid with power-of-two steps built from the exponent bits, which equals a round-to-
nearest-even cast to that format for every in-range value (callers clamp to ±max first, so it
saturates). ``min``/``max`` propagate NaN like ``torch.clamp``. Kernels are launched with
``enable_fp_fusion=False`` on GPUs so no multiply-add is contracted into an FMA.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
import triton
import triton.language as tl

# 1.5 * 2**23: adding then subtracting it rounds a float32 in [0, 2**22) half to even.
_RNE_MAGIC = 12582912.0

#: Storage dtypes the kernels load and store directly; anything else is not handled here.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Minifloat element formats: name -> (min normal exponent, mantissa bits, max finite value).
MINIFLOATS: dict[str, tuple[int, int, float]] = {
    "e4m3": (-6, 3, 448.0),
    "e5m2": (-14, 2, 57344.0),
    "e3m2": (-2, 2, 28.0),
    "e2m3": (0, 3, 7.5),
    "e2m1": (0, 1, 6.0),
}

#: FP8 exponent bits (the registry's ``exponent_bits`` argument) -> minifloat name.
FP8_BY_EXPONENT_BITS = {4: "e4m3", 5: "e5m2"}

#: Below (or at) this amax a quantizer outputs zeros (DESIGN.md §2).
TINY_AMAX = 2.0**-24


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def launch_options() -> dict[str, Any]:
    """Extra launch keywords: keep multiply and add separately rounded on the GPU."""
    return {} if interpreting() else {"enable_fp_fusion": False}


def check_input(x: torch.Tensor) -> bool:
    """Whether a kernel can take ``x`` directly (float dtype it stores, on a usable device)."""
    if x.dtype not in SUPPORTED_DTYPES:
        return False
    return x.is_cuda or interpreting()


def int_range(num_bits: int, unsigned: bool, narrow_range: bool) -> tuple[float, float, float]:
    """Return ``(bound, lo, hi)`` of the INT rule: ``scale = bound / amax``, clamp to [lo, hi].

    Args:
        num_bits: integer width, 2..8 (wider also works numerically).
        unsigned: ``[0, 2**n - 1]`` instead of the signed range.
        narrow_range: signed range ``[-bound, bound]`` instead of ``[-bound - 1, bound]``.
    """
    if not 2 <= num_bits <= 16:
        raise ValueError(f"num_bits must be in 2..16 for integer kernels, got {num_bits}")
    if unsigned:
        bound = float(2**num_bits - 1)
        return bound, 0.0, bound
    bound = float(2 ** (num_bits - 1) - 1)
    return bound, (-bound if narrow_range else -bound - 1.0), bound


@triton.jit
def _rne_magic(v):
    """Round half to even; exact while ``|v| < 2**22`` (callers clamp first). Keeps NaN, -0."""
    a = tl.abs(v)
    r = (a + 12582912.0) - 12582912.0
    sign = v.to(tl.uint32, bitcast=True) & 0x80000000
    return (r.to(tl.uint32, bitcast=True) | sign).to(tl.float32, bitcast=True)


def _libdevice() -> Any:
    try:
        from triton.language.extra import libdevice
    except ImportError:  # older Triton
        from triton.language.extra.cuda import libdevice  # type: ignore[no-redef]
    return libdevice


if interpreting():
    # the interpreter does not implement libdevice; the magic-number version is exact here
    rne = _rne_magic
else:
    libdevice = _libdevice()

    @triton.jit
    def rne(v):
        """Round half to even with one ``cvt.rni`` (same results as the magic-number form)."""
        return libdevice.rint(v)


@triton.jit
def div_exact(q, scale, inv):
    """``q / scale`` correctly rounded, from ``inv = RN(1 / scale)`` with three FMAs.

    The IEEE ``div.rn`` subroutine costs ~10 instructions and a branch per element, which made
    the INT kernels issue bound; here the quotient ``q * inv`` is refined twice with exact
    FMA residuals (Markstein), which gives the correctly rounded quotient for finite ``q``
    and normal positive ``scale`` whose quotient does not underflow (the INT rule: ``q`` is
    an integer code, ``scale = bound / amax`` with ``amax > 2**-24``). Checked against IEEE
    division on 10**8 (code, scale) pairs, and bit for bit in tests/gpu. Keeps ``q``'s sign
    (``-0.0 / s = -0.0``) and NaN.
    """
    a = tl.abs(q)
    r = a * inv
    r = tl.fma(tl.fma(-r, scale, a), inv, r)
    r = tl.fma(tl.fma(-r, scale, a), inv, r)
    sign = q.to(tl.uint32, bitcast=True) & 0x80000000
    return (r.to(tl.uint32, bitcast=True) | sign).to(tl.float32, bitcast=True)


@triton.jit
def clamp_nan(v, lo, hi):
    """``clamp(v, lo, hi)`` that keeps NaN, like ``torch.clamp``."""
    v = tl.maximum(v, lo, propagate_nan=tl.PropagateNan.ALL)
    return tl.minimum(v, hi, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def max_nan(a, b):
    """NaN-propagating maximum, the combine function of amax reductions."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def pow2(e):
    """``2.0**e`` as float32 for integer tensors ``e`` in [-126, 127] (built from bits)."""
    return ((e + 127).to(tl.uint32) << 23).to(tl.float32, bitcast=True)


@triton.jit
def round_minifloat(v, EMIN: tl.constexpr, MBITS: tl.constexpr):
    """Round ``v`` (already clamped to the format's ±max) to the minifloat grid, half to even.

    The step inside the binade ``[2**e, 2**(e+1))`` is ``2**(e - MBITS)``; below the smallest
    normal ``2**EMIN`` the step stays ``2**(EMIN - MBITS)`` (subnormals). Scaling by a power of
    two is exact, so the only rounding is the half-even one.
    """
    bits = v.to(tl.uint32, bitcast=True)
    e = ((bits >> 23) & 0xFF).to(tl.int32) - 127
    e = tl.maximum(e, EMIN)
    e = tl.minimum(e, 126 - MBITS)  # NaN/Inf exponent: keep the steps finite (NaN stays NaN)
    inv_step = pow2(MBITS - e)
    step = pow2(e - MBITS)
    return rne(v * inv_step) * step


@triton.jit
def ceil_log2(r):
    """Exact ``ceil(log2(r))`` for positive finite float32 ``r`` (subnormals included).

    For ``r = 0`` it returns -150 (callers floor at -127). ``log2`` in float32 is not exact
    near powers of two, so this works on the bits: normal ``r = 1.m * 2**E`` gives ``E`` when
    ``m == 0`` and ``E + 1`` otherwise.
    """
    small = r < 1.1754943508222875e-38  # below the smallest normal: scale up exactly first
    rs = tl.where(small, r * 18446744073709551616.0, r)  # * 2**64
    bits = rs.to(tl.uint32, bitcast=True)
    ex = ((bits >> 23) & 0xFF).to(tl.int32) - 127
    ex = tl.where((bits & 0x7FFFFF) != 0, ex + 1, ex)
    ex = tl.where(small, ex - 64, ex)
    return tl.where(r == 0.0, -150, ex)


@triton.jit
def f32_to_bf16_bits(v):
    """float32 -> bfloat16 bits (as int16), rounding to nearest even; NaN stays NaN.

    Done by hand because Triton's CPU interpreter does not round this cast to nearest even;
    on the GPU it costs a few integer operations of a memory-bound kernel.
    """
    bits = v.to(tl.uint32, bitcast=True)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = tl.where(is_nan, (bits >> 16) | 0x40, rounded)
    return rounded.to(tl.uint16).to(tl.int16, bitcast=True)


@triton.jit
def store_as(ptr, v, mask, BF16: tl.constexpr):
    """Store float32 ``v`` to ``ptr`` in its element type (int16 bits when ``BF16``)."""
    if BF16:
        tl.store(ptr, f32_to_bf16_bits(v), mask=mask)
    else:
        tl.store(ptr, v.to(ptr.dtype.element_ty), mask=mask)


def output_for(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Allocate the output like ``x``; return it, the buffer the kernel writes, and BF16 flag.

    The flag (store bf16 bits computed by hand) is only needed in the interpreter; on the GPU
    the native float32 -> bfloat16 conversion rounds to nearest even in one instruction.
    """
    out = torch.empty_like(x)
    if x.dtype == torch.bfloat16 and interpreting():
        return out, out.view(torch.int16), True
    return out, out, False


#: Use the GPU's float8 conversion instructions (round to nearest even, saturating) for E4M3
#: and E5M2 instead of the grid arithmetic; both give identical results (tests/gpu check it).
USE_NATIVE_FP8 = True


@functools.cache
def _fp8_capable(device_index: int) -> bool:
    # cached: the capability query costs tens of microseconds per launch otherwise
    return torch.cuda.get_device_capability(device_index) >= (8, 9)


def native_fp8() -> bool:
    """Whether kernels may use native float8 casts (a GPU with FP8 conversions, not the CPU)."""
    if interpreting() or not USE_NATIVE_FP8 or not torch.cuda.is_available():
        return False
    return _fp8_capable(torch.cuda.current_device())


@triton.jit
def round_elem(v, EMIN: tl.constexpr, MBITS: tl.constexpr, NATIVE: tl.constexpr):
    """:func:`round_minifloat`, through the hardware cast for E4M3/E5M2 when ``NATIVE``."""
    if NATIVE and EMIN == -6 and MBITS == 3:
        return v.to(tl.float8e4nv).to(tl.float32)
    elif NATIVE and EMIN == -14 and MBITS == 2:
        return v.to(tl.float8e5).to(tl.float32)
    else:
        return round_minifloat(v, EMIN, MBITS)
