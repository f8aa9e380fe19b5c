"""Engine-facing float32 scales that give back our quantizers bit for bit.

Why this exists: a quantizer's numerics depend on one float32 per scale, the *multiplier*
``m = fl(bound / amax)`` (FP8 and INT codes are ``x * m``; DESIGN §2). Checkpoints carry the
engine convention ``s ≈ amax / bound`` instead. Reading ``amax = s * bound`` back (what the
loader did) gives an amax whose multiplier can be one ulp off ``m``; in a deep W8A8 model a
one-ulp multiplier flips FP8 activation codes and the flips grow layer by layer (SmolLM2-135M
FP8: 2.27 logits from 7 of ~120 distinct activation amaxes).

The rule used here (:class:`ReciprocalRule`) follows what serving engines do with a static
scale: they quantize with ``x * (1 / s)`` and dequantize with ``s``. So we write the ``s`` whose
correctly rounded reciprocal is ``m`` (preferring ``s = fl(1 / m)``, so that engines also
dequantize with our exact factor), and the loader takes ``m = fl(1 / s)`` and an amax whose
multiplier is ``m``. Float32 reciprocals are not a bijection: about 1 multiplier in 6 is no
float32 reciprocal at all (and some multipliers have no amax), so for those the only way to
make the checkpoint say exactly what the model computes is to move the model: the multiplier
is snapped to the nearest one that the checkpoint can express (a one-ulp change of the amax),
in place, by :func:`snap_model_scales` (``export_hf_checkpoint`` calls it and reports which
quantizers moved). Call it yourself right after calibration to evaluate exactly what will be
exported.

NVFP4 global scales are stored as computed (``scale_2 = fl(amax / 2688)``) and need no snap
(:class:`DirectRule`); the loader only has to pick an amax that reproduces ``scale_2``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from modeloptim.torch.quantization.nn import TensorQuantizer
from modeloptim.torch.quantization.qtensor.base import TINY_AMAX, true_div

__all__ = [
    "DirectRule",
    "ReciprocalRule",
    "ScaleRule",
    "activation_rule",
    "decode_fp8_weight_multiplier",
    "snap_model_scales",
]

_FP8_MAX = 448.0
#: how far (float32 ulps of the scale) the search for an expressible multiplier goes
_SEARCH_ULPS = 64
_A_STEPS = (0, -1, 1, -2, 2)


def _nudge(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``x`` moved ``steps`` float32 ulps (negative: down)."""
    target = torch.full_like(x, float("inf") if steps > 0 else float("-inf"))
    for _ in range(abs(steps)):
        x = torch.nextafter(x, target)
    return x


def _first_match(cands: Iterator[tuple[torch.Tensor, torch.Tensor]], like: torch.Tensor):
    """First candidate value per element whose mask is true; NaN where none is."""
    out = torch.full_like(like, float("nan"))
    done = torch.zeros_like(like, dtype=torch.bool)
    for value, ok in cands:
        take = ok & ~done
        out = torch.where(take, value, out)
        done |= take
    return out


@dataclass(frozen=True)
class ReciprocalRule:
    """Scales of formats whose codes are ``x * fl(bound / amax)`` (FP8, INT static)."""

    bound: float

    def multiplier(self, amax: torch.Tensor) -> torch.Tensor:
        """``fl(bound / amax)``, as the quantizer computes it."""
        return true_div(self.bound, amax.float())

    def amax_for(self, m: torch.Tensor) -> torch.Tensor:
        """An amax whose multiplier is exactly ``m`` (NaN where no float32 amax has it)."""
        base = true_div(self.bound, m)
        cands = ((a, self.multiplier(a) == m) for a in (_nudge(base, k) for k in _A_STEPS))
        return _first_match(cands, base)

    def encode_multiplier(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(engine scale s, multiplier m')``: ``fl(1 / s) == m'``, and ``m' == m`` if possible.

        Where no float32 ``s`` has ``m`` as its reciprocal, ``m'`` is the first multiplier that
        both has one and has an amax, searching outward from ``fl(1 / m)`` (float32
        reciprocals and ``bound / amax`` each skip about every other value in parts of a
        binade, so the nearest such ``m'`` can be a few ulps away); ``s`` is NaN where
        none is found within :data:`_SEARCH_ULPS`.
        """
        m = m.detach().float()
        s_out = true_div(1.0, m)
        m_out = m.clone()
        todo = (true_div(1.0, s_out) != m).reshape(-1).nonzero().squeeze(1)
        if todo.numel() == 0:
            return s_out, m_out
        mt = m.reshape(-1)[todo]
        base = s_out.reshape(-1)[todo]
        best_s = torch.full_like(mt, float("nan"))
        best_m = mt.clone()
        best_d = torch.full_like(mt, float("inf"))
        up, down = base, base
        for step in range(_SEARCH_ULPS + 1):
            cands = (base,) if step == 0 else (down, up)
            for s in cands:
                mk = true_div(1.0, s)
                exact = mk == mt
                valid = exact | ~torch.isnan(self.amax_for(mk))
                dist = torch.where(exact, torch.zeros_like(mt), (mk - mt).abs())
                dist = torch.where(valid, dist, torch.full_like(dist, float("inf")))
                better = dist < best_d
                best_s = torch.where(better, s, best_s)
                best_m = torch.where(better, mk, best_m)
                best_d = torch.where(better, dist, best_d)
            if bool((best_d == 0).all()) or (step > 2 and bool(torch.isfinite(best_d).all())):
                break
            up = torch.nextafter(up, torch.full_like(up, float("inf")))
            down = torch.nextafter(down, torch.full_like(down, float("-inf")))
        s_flat, m_flat = s_out.reshape(-1).clone(), m_out.reshape(-1).clone()
        s_flat[todo], m_flat[todo] = best_s, best_m
        return s_flat.reshape(m.shape), m_flat.reshape(m.shape)

    def encode(self, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(engine scale, amax to use)`` for ``amax`` (float32, any shape).

        The returned amax is the input itself where the checkpoint can express its
        multiplier, and the amax of the nearest expressible multiplier elsewhere.
        """
        amax = amax.detach().float()
        m = self.multiplier(amax)
        s, m_new = self.encode_multiplier(m)
        new_amax = torch.where(m_new == m, amax, self.amax_for(m_new))
        # amax <= 2**-24 quantizes to zero whatever the scale: written plainly, never moved
        bad = torch.isnan(s) | torch.isnan(new_amax) | (amax <= TINY_AMAX)
        return torch.where(bad, true_div(amax, self.bound), s), torch.where(bad, amax, new_amax)

    def decode(self, scale: torch.Tensor) -> torch.Tensor:
        """The amax our quantizer needs for engine scale ``scale``."""
        s = scale.detach().float()
        a = self.amax_for(true_div(1.0, s))
        return torch.where(torch.isnan(a), s * self.bound, a)

    def multiplier_from_scale(self, scale: torch.Tensor) -> torch.Tensor:
        """The packed-weight multiplier ``m`` for engine scale ``scale`` (``fl(1 / s)``)."""
        return true_div(1.0, scale.detach().float())


@dataclass(frozen=True)
class DirectRule:
    """Scales stored as the quantizer computes them: ``fl(amax / bound)`` (NVFP4 global)."""

    bound: float

    def encode(self, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(engine scale, amax)``: the scale is exact, the amax never moves."""
        amax = amax.detach().float()
        return true_div(amax, self.bound), amax

    def decode(self, scale: torch.Tensor) -> torch.Tensor:
        """An amax with ``fl(amax / bound) == scale``."""
        s = scale.detach().float()
        base = s * self.bound
        cands = ((a, true_div(a, self.bound) == s) for a in (_nudge(base, k) for k in _A_STEPS))
        a = _first_match(cands, base)
        return torch.where(torch.isnan(a), base, a)


ScaleRule = ReciprocalRule | DirectRule


def activation_rule(q: TensorQuantizer) -> ScaleRule | None:
    """The rule of a static per-tensor quantizer's scale, ``None`` for dynamic ones."""
    from modeloptim.torch.export.layers import format_kind

    kind = format_kind(q.format)
    if kind in ("fp8", "int8"):
        return ReciprocalRule(float(q.maxbound))
    if kind == "nvfp4":
        return DirectRule(float(q.maxbound) * _FP8_MAX)
    return None


def decode_fp8_weight_multiplier(scale: torch.Tensor) -> torch.Tensor:
    """A multiplier ``m`` with ``fl(1 / m) == scale`` (FP8 weights dequantize as ``q * fl(1/m)``).

    ``scale = fl(1 / m)`` is what the export writes, so such an ``m`` always exists and the
    packed weight decodes bit for bit, whichever of the (up to two) candidates is taken.
    """
    s = scale.detach().float()
    base = true_div(1.0, s)
    cands = ((c, true_div(1.0, c) == s) for c in (_nudge(base, k) for k in _A_STEPS))
    m = _first_match(cands, base)
    return torch.where(torch.isnan(m), base, m)


def _static_quantizers(model: nn.Module) -> Iterator[tuple[str, TensorQuantizer, ScaleRule]]:
    """Activation/KV quantizers and W4A8 second weight stages with a calibrated scale."""
    from modeloptim.torch.export.layers import collect_layers, kv_quantizers

    layers, _ = collect_layers(model)
    for spec in layers:
        if spec.input_quantizer is not None and spec.input_quantizer.amax is not None:
            rule = activation_rule(spec.input_quantizer)
            if rule is not None:
                yield f"{spec.name}.input_quantizer", spec.input_quantizer, rule
        for i, stage in enumerate(spec.weight_stages[1:], start=1):
            rule = activation_rule(stage)
            if rule is not None and stage.amax is not None:
                yield f"{spec.name}.weight_quantizer.{i}", stage, rule
    for name, k, v in kv_quantizers(model):
        for key, q in (("k_bmm_quantizer", k), ("v_bmm_quantizer", v)):
            rule = activation_rule(q)
            if rule is not None and q.amax is not None:
                yield f"{name}.{key}", q, rule


def _int_weight_stage(spec_stage: TensorQuantizer) -> ReciprocalRule | None:
    from modeloptim.torch.export.layers import format_kind

    kind = format_kind(spec_stage.format)
    if kind in ("int8", "int8_pc", "int4_block"):
        return ReciprocalRule(float(spec_stage.maxbound))
    return None


def snap_model_scales(model: nn.Module) -> list[str]:
    """Make every static scale of ``model`` exactly expressible by its checkpoint scale.

    Moves (in place) the amax of each activation / KV / W4A8-second-stage quantizer, and the
    per-channel / per-block amax (or packed multiplier, for ``mtq.compress``-ed layers) of INT
    weights, whose multiplier has no float32 engine scale, to the nearest one that has
    (a change of about one float32 ulp of the scale). Idempotent. FP8 weight scales and NVFP4
    / MX scales never need a snap.

    Returns:
        Names of the quantizers (``<layer>.input_quantizer``, ``<layer>.weight_quantizer``,
        ...) whose values moved.
    """
    from modeloptim.torch.export.layers import collect_layers
    from modeloptim.torch.quantization.compress import CompressedWeight

    moved: list[str] = []
    for name, q, rule in _static_quantizers(model):
        amax = q.amax
        assert amax is not None
        _, new = rule.encode(amax)
        if not torch.equal(new, amax.float()):
            q.amax = new.reshape(amax.shape).to(amax.device)
            moved.append(name)
    layers, _ = collect_layers(model)
    for spec in layers:
        stored = spec.module._modules.get("weight")
        first = spec.weight_stages[0]
        int_rule = _int_weight_stage(first)
        if int_rule is None:
            continue
        if isinstance(stored, CompressedWeight):
            m = stored._buffers["scale"]
            assert m is not None
            s, m_new = int_rule.encode_multiplier(m.float())
            m_new = torch.where(torch.isnan(s), m, m_new)
            if not torch.equal(m_new, m):
                stored.register_buffer("scale", m_new.to(m.device))  # codes stay
                moved.append(f"{spec.name}.weight")
        elif first.amax is not None:
            _, new = int_rule.encode(first.amax)
            if not torch.equal(new, first.amax.float()):
                first.amax = new.reshape(first.amax.shape).to(first.amax.device)
                moved.append(f"{spec.name}.weight_quantizer")
    return moved
