import copy

import pytest

from modeloptim.torch.trace import analyze

from .hand_models import HAND_MODELS
from .invariant import check_prune_all, check_prune_each


@pytest.mark.parametrize("name", sorted(HAND_MODELS))
def test_prune_half_of_every_group_runs(name):
    cls, make_x = HAND_MODELS[name]
    model, x = cls().eval(), make_x()
    res = analyze(model, x)
    n = check_prune_each(model, x, res)
    assert n >= 1 or name == "control_flow"
    for g in res.frozen_groups:
        assert g.reasons, g.name
    check_prune_all(copy.deepcopy(model), x, analyze(model, x))
