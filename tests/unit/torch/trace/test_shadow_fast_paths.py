"""Shadow execution without reverting fx's patches: plain ``nn.Linear`` calls and attributes.

The tracer's shadow run must give the same example values as calling the modules (within
fx's patches it reads parameters from the modules' own dicts), record tensor shapes on the
nodes, and still revert the patches for modules with hooks or their own code.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import fx, nn

from modeloptim.torch.trace import shadow
from modeloptim.torch.trace.graph_readers import LeafCandidates
from modeloptim.torch.trace.symbols import SYM_RULES
from modeloptim.torch.trace.tracer import RobustTracer


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.hooked = nn.Linear(8, 8, bias=False)
        self.scale = nn.Parameter(torch.full((8,), 0.5))
        self.hooked.register_forward_hook(lambda m, a, out: out * 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        y = y.view(*y.shape[:-1], 2, y.shape[-1] // 2).flatten(-2)  # shape-only logic
        return self.hooked(y) * self.scale


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[RobustTracer, fx.Graph]:
    tracer = RobustTracer(example={"x": x})
    return tracer, tracer.trace(model)


def _value(tracer: RobustTracer, graph: fx.Graph, target: str) -> Any:
    node = next(n for n in graph.nodes if n.target == target)
    return node, tracer.values[node]


@pytest.fixture
def reverts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    orig = shadow._unpatched

    def counted() -> Any:
        calls.append(1)
        return orig()

    monkeypatch.setattr(shadow, "_unpatched", counted)
    return calls


def test_shadow_values_equal_module_calls(reverts):
    torch.manual_seed(0)
    model = _Net().eval()
    x = torch.randn(3, 6)
    tracer, graph = _trace(model, x)
    with torch.no_grad():
        want_fc = model.fc(x)
        want_hooked = model.hooked(want_fc)
    node, got = _value(tracer, graph, "fc")
    torch.testing.assert_close(got, want_fc, rtol=0, atol=0)
    assert node.meta["mo_shape"] == (3, 8)
    _, got_hooked = _value(tracer, graph, "hooked")
    torch.testing.assert_close(got_hooked, want_hooked, rtol=0, atol=0)  # hook applied
    _, scale = _value(tracer, graph, "scale")
    assert scale is model.scale
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    torch.testing.assert_close(tracer.values[out], model(x).detach(), rtol=0, atol=0)
    # only the hooked layer needed fx's patches reverted (fc and the parameter did not)
    assert len(reverts) == 1


def test_linear_subclass_runs_its_own_forward(reverts):
    class Scaled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2.0

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = Scaled(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    torch.manual_seed(0)
    model = Net()
    x = torch.randn(2, 4)
    tracer = RobustTracer(LeafCandidates(SYM_RULES, {id(model.fc)}), example={"x": x})
    graph = tracer.trace(model)
    (call,) = [n for n in graph.nodes if n.op == "call_module"]
    with torch.no_grad():
        torch.testing.assert_close(tracer.values[call], model(x), rtol=0, atol=0)  # x2 kept
    assert len(reverts) == 1
