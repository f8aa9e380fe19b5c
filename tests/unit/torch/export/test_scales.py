"""Engine-facing scales (export/scales.py): exact reload rules, checked with float64 math."""

import numpy as np
import pytest
import torch

from modeloptim.torch.export.scales import (
    DirectRule,
    ReciprocalRule,
    decode_fp8_weight_multiplier,
)


def _f32(x):
    return np.float32(x)


def _amaxes(n=20000, seed=0):
    g = torch.Generator().manual_seed(seed)
    # log-uniform over many binades: every mantissa region (gaps, collisions) is hit
    return torch.exp2(torch.rand(n, generator=g, dtype=torch.float64) * 40 - 20).float()


@pytest.mark.parametrize("bound", [448.0, 127.0, 7.0])
def test_reciprocal_rule_roundtrip_is_exact(bound):
    rule = ReciprocalRule(bound)
    amax = _amaxes()
    scale, new_amax = rule.encode(amax)
    m = (np.float32(bound) / amax.numpy()).astype(np.float32)  # numpy: IEEE f32 division
    m_new = (np.float32(bound) / new_amax.numpy()).astype(np.float32)
    # the engine convention: fl(1 / s) is the multiplier of the (possibly snapped) amax
    np.testing.assert_array_equal((np.float32(1) / scale.numpy()).astype(np.float32), m_new)
    # the loader gets an amax with that multiplier from the scale alone
    decoded = rule.decode(scale)
    np.testing.assert_array_equal((np.float32(bound) / decoded.numpy()).astype(np.float32), m_new)
    moved = m_new != m
    # most multipliers are expressible; the rest move by a relative ~1e-6 at most
    assert 0.03 < moved.mean() < 0.4
    rel = np.abs(m_new.astype(np.float64) / m.astype(np.float64) - 1)
    assert rel.max() < 2e-5
    # the scale is the engine's amax/bound within float32 rounding (a few ulps)
    ref = amax.double().numpy() / bound
    assert np.abs(scale.double().numpy() / ref - 1).max() < 2e-5
    # where the multiplier was expressible, the model's amax is left alone
    assert torch.equal(new_amax[~torch.from_numpy(moved)], amax[~torch.from_numpy(moved)])


def test_reciprocal_rule_prefers_engine_dequant_factor():
    # where fl(1/m) round-trips, the written scale is exactly fl(1/m): engines dequantize with
    # the same factor as our fake quantization (codes * fl(1/m)) and nothing moves
    rule = ReciprocalRule(448.0)
    amax = _amaxes(5000, seed=1)
    m = (np.float32(448) / amax.numpy()).astype(np.float32)
    inv = (np.float32(1) / m).astype(np.float32)
    roundtrips = (np.float32(1) / inv).astype(np.float32) == m
    assert roundtrips.mean() > 0.5
    scale, new = rule.encode(amax)
    np.testing.assert_array_equal(scale.numpy()[roundtrips], inv[roundtrips])
    np.testing.assert_array_equal(new.numpy()[roundtrips], amax.numpy()[roundtrips])
    assert rule.encode(torch.tensor([448.0]))[0].item() == 1.0  # hand case: m = 1, s = 1


def test_reciprocal_rule_fixes_the_smollm2_case():
    # an activation amax from SmolLM2 layer 6 o_proj: amax = fl(s * 448) gives another multiplier
    amax = torch.tensor([1.7877846956253052])
    naive = (amax / 448) * 448
    rule = ReciprocalRule(448.0)
    assert rule.multiplier(naive) != rule.multiplier(amax)  # the old loader's drift
    scale, new = rule.encode(amax)
    assert rule.multiplier(rule.decode(scale)) == rule.multiplier(new)


def test_tiny_and_zero_amax_are_kept():
    rule = ReciprocalRule(448.0)
    amax = torch.tensor([0.0, 2.0**-30])
    scale, new = rule.encode(amax)
    assert torch.equal(new, amax)
    assert torch.equal(scale, amax / 448)
    assert bool((rule.decode(scale) <= 2.0**-24).all())  # still quantizes to zero


def test_direct_rule_is_exact_and_never_moves():
    rule = DirectRule(6 * 448.0)
    amax = _amaxes(5000, seed=3)
    scale, new = rule.encode(amax)
    assert torch.equal(new, amax)
    np.testing.assert_array_equal(
        scale.numpy(), (amax.numpy() / np.float32(2688)).astype(np.float32)
    )
    back = rule.decode(scale)
    np.testing.assert_array_equal((back.numpy() / np.float32(2688)).astype(np.float32), scale)


def test_fp8_weight_multiplier_decodes_the_dequant_factor():
    m = (448.0 / _amaxes(5000, seed=4)).float()
    s = (np.float32(1) / m.numpy()).astype(np.float32)
    back = decode_fp8_weight_multiplier(torch.from_numpy(s))
    np.testing.assert_array_equal((np.float32(1) / back.numpy()).astype(np.float32), s)
