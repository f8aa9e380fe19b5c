"""sensitivity_budget: the fewest float nodes whose quantized rest fits the error budget."""

from __future__ import annotations

import math

import pytest

from modeloptim.onnx.quantization import quantize
from modeloptim.onnx.quantization.sensitivity import budget_count
from tests.unit.onnx.conftest import fragile_pair


def _brute(scores, budget):
    ranked = sorted(scores.values(), reverse=True)
    for k in range(len(ranked) + 1):
        if math.sqrt(sum(s * s for s in ranked[k:])) <= budget:
            return k
    raise AssertionError("unreachable: k = len leaves nothing")


@pytest.mark.parametrize("budget", [0.0, 0.05, 0.1, 0.3, 0.35, 1.0])
def test_budget_count_matches_brute_force(budget):
    scores = {"a": 0.3, "b": 0.01, "c": 0.2, "d": 0.05, "e": 0.0, "f": 0.12}
    assert budget_count(scores, budget) == _brute(scores, budget)
    assert budget_count(scores, budget, cap=1) == min(1, _brute(scores, budget))


def test_budget_hand_computed():
    # rest after dropping "a": sqrt(0.2^2 + 0.12^2 + 0.05^2 + 0.01^2) = 0.2389
    scores = {"a": 0.3, "b": 0.01, "c": 0.2, "d": 0.05, "f": 0.12}
    assert budget_count(scores, 0.24) == 1
    assert budget_count(scores, 0.238) == 2
    assert budget_count(scores, 10.0) == 0


def test_quantize_budget_keeps_the_fragile_node_float(tmp_path):
    path, data = fragile_pair(tmp_path)
    common = {
        "calibration_data": data,
        "sensitivity_metric": "output",
        "calibration_batch_size": 8,
    }
    res = quantize(path, "int8", output_path=tmp_path / "a.onnx", sensitivity_budget=1e9, **common)
    assert sorted(res.quantized_nodes) == ["fragile", "plain"]
    plain, fragile = res.sensitivity["plain"], res.sensitivity["fragile"]
    # A budget between the two scores keeps exactly the fragile node float.
    mid = 0.5 * (plain + fragile)
    res = quantize(path, "int8", output_path=tmp_path / "b.onnx", sensitivity_budget=mid, **common)
    assert res.quantized_nodes == ["plain"]
    res = quantize(path, "int8", output_path=tmp_path / "c.onnx", sensitivity_budget=0.0, **common)
    assert res.quantized_nodes == []
