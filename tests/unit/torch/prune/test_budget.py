"""`budget_for`: limits relative to the model's own size; FLOPs only counted when limited."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modeloptim.torch.prune.search import budget_for


def test_percentages_of_the_model_and_flops_only_when_asked():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(2, 8)
    params = 8 * 16 + 16 + 16 * 4 + 4
    b = budget_for(model, {"params": "50%"}, x)
    assert b.reference == {"params": params, "flops": 0}
    assert b.limits == {"params": pytest.approx(params / 2)}
    assert not b.needs_flops
    b = budget_for(model, {"flops": "25%", "params": 100}, x)
    flops = 2 * 2 * (8 * 16 + 16 * 4)  # two FLOPs per multiply-accumulate, batch of 2
    assert b.reference == {"params": params, "flops": flops}
    assert b.limits == {"flops": pytest.approx(flops / 4), "params": 100.0}
    assert b.needs_flops
    with pytest.raises(ValueError, match="constraints: expected a dict"):
        budget_for(model, ["flops"], x)
