"""`observe`: batch limiting, forward dispatch, eval mode and hook cleanup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modeloptim.torch.prune.observe import limited, observing, run_batch


def test_limited_stops_and_passes_everything_without_limit():
    assert list(limited(range(10), 3)) == [0, 1, 2]
    assert list(limited(range(4), None, "bar")) == [0, 1, 2, 3]
    assert list(limited(range(2), 5)) == [0, 1]


def test_run_batch_dispatch():
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    torch.testing.assert_close(run_batch(lin, x), lin(x), rtol=0, atol=0)
    torch.testing.assert_close(run_batch(lin, {"input": x}), lin(x), rtol=0, atol=0)
    assert run_batch(lin, x, lambda m, b: b.sum()) == x.sum()


def test_observing_restores_mode_and_removes_hooks_on_error():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).train()
    seen: list[bool] = []
    handle = model.register_forward_hook(lambda m, a, o: seen.append(m.training))

    def failing_run() -> None:
        with observing(model, [handle]):
            model(torch.randn(1, 3))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_run()
    assert seen == [False]  # ran in eval mode
    assert model.training
    assert model[1].training
    model(torch.randn(1, 3))
    assert seen == [False]  # the hook is gone
