# ruff: noqa: N803  (Triton kernels: constexpr parameters are upper case by convention)
"""Triton helpers decoding packed 4-bit weights and 16-bit activation pairs in registers.

Shared by the W4A16 GEMV kernels (``_gemv_kernels``) and the tile/dequantization kernels
(``_kernels``): INT4 (two's complement) and E2M1 codes to float32 without int->float
converts, FP8 E4M3 scale bytes to float32, and int32 words holding two 16-bit floats split
into float32 halves.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _e2m1_value(c):
    """float32 value of 4-bit E2M1 codes (int32 0..15), from the bits in 5 operations.

    Placing exponent and mantissa bits at float32 bits 23..24 and 22 gives
    ``2**(e-127) * (1 + m/2)`` (or the subnormal ``m/2 * 2**-126`` for e = 0); times
    ``2**126`` that is exactly the E2M1 value. The sign bit moves to bit 31.
    """
    bits = ((c & 7) << 22) | ((c & 8) << 28)
    return bits.to(tl.float32, bitcast=True) * 8.507059173023462e37  # 2**126


@triton.jit
def _e4m3_value(b):
    """float32 value of float8_e4m3fn bytes (int32 0..255; NaN codes are not expected).

    Exponent and mantissa bits go to float32 bits 23..26 and 20..22; times ``2**120`` that is
    ``2**(e-7) * (1 + m/8)``, and for e = 0 the subnormal ``m * 2**-9``.
    """
    bits = ((b & 127) << 20) | ((b & 128) << 24)
    return bits.to(tl.float32, bitcast=True) * 1.329227995784916e36  # 2**120


@triton.jit
def _int4_value(nib):
    """float32 value of two's-complement nibbles (int32 0..15) without an int->float convert.

    ``nib ^ 8`` is the offset-8 code; OR-ing it into the mantissa of ``2**23`` and
    subtracting ``2**23 + 8`` gives the signed value exactly.
    """
    return (nib ^ 0x4B000008).to(tl.float32, bitcast=True) - 8388616.0


@triton.jit
def _unpack(p, WFMT: tl.constexpr):
    """Packed bytes (int32) -> (even, odd) element values as float32."""
    lo = p & 15
    hi = (p >> 4) & 15
    if WFMT == 0:
        return _int4_value(lo), _int4_value(hi)
    else:
        return _e2m1_value(lo), _e2m1_value(hi)


@triton.jit
def _split_pair(xp, XBF16: tl.constexpr):
    """int32 words holding two 16-bit floats -> (low half, high half) as float32."""
    if XBF16:
        lo = (xp << 16).to(tl.float32, bitcast=True)
        hi = (xp & -65536).to(tl.float32, bitcast=True)
    else:
        lo = (xp & 65535).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        hi = ((xp >> 16) & 65535).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return lo, hi


@triton.jit
def _load_scales(s_ptr, offs, mask, WFMT: tl.constexpr):
    if WFMT == 0:
        return tl.load(s_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        return _e4m3_value(tl.load(s_ptr + offs, mask=mask, other=0).to(tl.int32))
