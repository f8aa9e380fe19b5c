"""Pure PyTorch versions of the pinned fake-quant numerics, with the kernels' signatures.

These are the eager (and ``torch.compile``) baselines of ``benchmarks/gpu/fake_quant_bw.py``
and the oracle of the kernel tests. They follow DESIGN.md §2 op for op in float32 and return
``x.dtype``; they import no Triton and run on any device.

Choices beyond DESIGN.md (the kernels make the same ones):

* ``amax <= 2**-24`` (per tensor, channel or block) gives zeros; for NVFP4 a global amax at or
  below that gives zeros.
* MX: ``e = ceil(log2(block_amax / elem_max))`` is computed exactly from the float32 bits
  (``torch.frexp``), not with ``torch.log2``, whose rounding makes ``ceil`` wrong just above
  powers of two. ``e`` is floored at -127 (a zero block gives -127) and capped at 127 (a
  block holding ±inf gets 127: its finite elements flush to zero, the infinities stay).
* MXINT8 elements are int8 codes ``k`` in [-127, 127] with an implicit ``2**-6`` (OCP MX v1.0
  scaling, symmetric range), so ``elem_max = 127 / 64``; ``q = clamp(round(v * 64)) / 64``.
* MX: a block containing NaN comes out all NaN (like the INT/FP8/NVFP4 rules, whose NaN
  scale spreads over the block).
"""

from __future__ import annotations

import torch

TINY_AMAX = 2.0**-24

#: name -> (min normal exponent, mantissa bits, max finite value)
MINIFLOATS: dict[str, tuple[int, int, float]] = {
    "e4m3": (-6, 3, 448.0),
    "e5m2": (-14, 2, 57344.0),
    "e3m2": (-2, 2, 28.0),
    "e2m3": (0, 3, 7.5),
    "e2m1": (0, 1, 6.0),
}
_FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
MX_ELEM_MAX = {**{k: v[2] for k, v in MINIFLOATS.items()}, "int8": 127.0 / 64.0}


def _div(num: torch.Tensor | float, den: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """IEEE float32 ``num / den`` with both operands as tensors on ``like``'s device.

    ``float / tensor`` in PyTorch is ``reciprocal(tensor) * float`` (two roundings), and CUDA
    computes ``tensor / python_scalar`` as a multiply by the reciprocal; either differs from
    the correctly rounded quotient that DESIGN.md §2 and the kernels use.
    """
    n = num if isinstance(num, torch.Tensor) else torch.full_like(like, num)
    d = den if isinstance(den, torch.Tensor) else torch.full_like(like, den)
    return torch.div(n, d)


def _int_bounds(num_bits: int, unsigned: bool, narrow_range: bool) -> tuple[float, float, float]:
    if unsigned:
        bound = float(2**num_bits - 1)
        return bound, 0.0, bound
    bound = float(2 ** (num_bits - 1) - 1)
    return bound, (-bound if narrow_range else -bound - 1.0), bound


def round_to_grid(v: torch.Tensor, elem: str) -> torch.Tensor:
    """Round float32 ``v`` half-to-even onto a minifloat grid, saturating at ±max.

    E4M3 and E5M2 use torch's float8 casts; E3M2, E2M3 and E2M1 snap to the grid whose step is
    ``2**(floor(log2|v|) - mantissa_bits)`` (constant below the smallest normal).
    """
    emin, mbits, vmax = MINIFLOATS[elem]
    v = v.clamp(-vmax, vmax)
    if elem in _FP8_DTYPES:
        return v.to(_FP8_DTYPES[elem]).float()
    a = v.abs()
    _, ex = torch.frexp(a)  # a = m * 2**ex with m in [0.5, 1): floor(log2 a) = ex - 1
    step_exp = torch.clamp(ex - 1, min=emin) - mbits
    step = torch.ldexp(torch.ones_like(a), step_exp)
    return torch.copysign(torch.round(a / step) * step, v)


def fake_quant_int(
    x: torch.Tensor, amax: torch.Tensor, num_bits: int, unsigned: bool, narrow_range: bool
) -> torch.Tensor:
    """INT fake quant: ``q = clamp(round(x * bound / amax))``, ``out = q / scale``.

    Args:
        x: any shape.
        amax: float32, broadcastable to ``x``.
        num_bits: integer width.
        unsigned: use ``[0, 2**n - 1]``.
        narrow_range: signed range ``[-bound, bound]`` instead of ``[-bound - 1, bound]``.
    """
    bound, lo, hi = _int_bounds(num_bits, unsigned, narrow_range)
    xf, a = x.float(), amax.float()
    tiny = a <= TINY_AMAX
    scale = torch.where(tiny, torch.ones_like(a), _div(bound, a, a))
    q = torch.clamp(torch.round(xf * scale), lo, hi)
    return torch.where(tiny, torch.zeros_like(xf), q / scale).to(x.dtype)


def fake_quant_fp8(x: torch.Tensor, amax: torch.Tensor, exponent_bits: int) -> torch.Tensor:
    """FP8 fake quant: ``clamp(x * fmax / amax)`` cast to FP8, times ``1 / scale``.

    Args:
        x: any shape.
        amax: float32, broadcastable to ``x``.
        exponent_bits: 4 (E4M3, max 448) or 5 (E5M2, max 57344).
    """
    elem = {4: "e4m3", 5: "e5m2"}[exponent_bits]
    fmax = MINIFLOATS[elem][2]
    xf, a = x.float(), amax.float()
    tiny = a <= TINY_AMAX
    scale = torch.where(tiny, torch.ones_like(a), _div(fmax, a, a))
    y = torch.clamp(xf * scale, -fmax, fmax).to(_FP8_DTYPES[elem]).float()
    return torch.where(tiny, torch.zeros_like(xf), y * torch.reciprocal(scale)).to(x.dtype)


def _block_amax(xf: torch.Tensor) -> torch.Tensor:
    return xf.abs().amax(dim=-1, keepdim=True)


def fake_quant_int_dynamic_block(
    x2d: torch.Tensor, num_bits: int, unsigned: bool, narrow_range: bool
) -> torch.Tensor:
    """INT rule with each row's own amax. ``x2d``: ``[N, B]`` (one block per row)."""
    return fake_quant_int(x2d, _block_amax(x2d.float()), num_bits, unsigned, narrow_range)


def fake_quant_fp8_dynamic_block(x2d: torch.Tensor, exponent_bits: int) -> torch.Tensor:
    """FP8 rule with each row's own amax. ``x2d``: ``[N, B]`` (one block per row)."""
    return fake_quant_fp8(x2d, _block_amax(x2d.float()), exponent_bits)


def fake_quant_nvfp4(x2d: torch.Tensor, global_amax: torch.Tensor) -> torch.Tensor:
    """NVFP4 fake quant with two-level scales. ``x2d``: ``[N, 16]``; ``global_amax``: 0-d."""
    xf = x2d.float()
    ga = global_amax.float().reshape(())
    scale_2 = _div(ga, 2688.0, ga)  # 6 * 448
    s = _block_amax(xf) / (6.0 * scale_2)
    s = torch.where(s == 0, torch.ones_like(s), s)
    s = s.clamp(2.0**-9, 448.0).to(torch.float8_e4m3fn).float()
    d = s * scale_2
    out = round_to_grid(xf / d, "e2m1") * d
    return torch.where(ga <= TINY_AMAX, torch.zeros_like(out), out).to(x2d.dtype)


def mx_exponent(block_amax: torch.Tensor, elem: str) -> torch.Tensor:
    """Shared E8M0 exponent ``ceil(log2(block_amax / elem_max))`` in [-127, 127] (int32)."""
    r = _div(block_amax, MX_ELEM_MAX[elem], block_amax)
    m, ex = torch.frexp(r)  # r = m * 2**ex, m in [0.5, 1): ceil(log2 r) = ex - (m == 0.5)
    e = torch.where(m == 0.5, ex - 1, ex)
    e = torch.where(r == 0, torch.full_like(e, -127), e)
    e = torch.where(torch.isinf(r), torch.full_like(e, 127), e)  # frexp(inf) is unspecified
    return e.clamp(-127, 127)


def fake_quant_mx(x2d: torch.Tensor, elem: str) -> torch.Tensor:
    """MX fake quant. ``x2d``: ``[N, 32]``; ``elem`` in e4m3/e5m2/e3m2/e2m3/e2m1/int8."""
    if elem not in MX_ELEM_MAX:
        raise ValueError(f"elem must be one of {sorted(MX_ELEM_MAX)}, got {elem!r}")
    xf = x2d.float()
    bamax = _block_amax(xf)
    e = mx_exponent(bamax, elem)
    scale = torch.ldexp(torch.ones_like(e, dtype=torch.float32), e)
    v = xf / scale
    if elem == "int8":
        q = torch.clamp(torch.round(v * 64.0), -127.0, 127.0) / 64.0
    else:
        q = round_to_grid(v, elem)
    out = torch.where(bamax.isnan(), torch.full_like(xf, float("nan")), q * scale)
    return out.to(x2d.dtype)


def ste_backward(x: torch.Tensor, grad_out: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """Straight-through gradient: ``grad_out`` where ``|x| <= amax``, else 0."""
    keep = x.float().abs() <= amax.float()
    return torch.where(keep, grad_out, torch.zeros_like(grad_out))
