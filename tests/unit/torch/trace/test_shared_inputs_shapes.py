"""Row-only ops are seen through with the shapes the trace's shadow run recorded.

The graph finder used to run every graph a second time (an fx ``Interpreter``) to learn the
shapes around ``x[idx]`` / ``x.view(-1, d)``; the tracer now leaves them in
``node.meta["mo_shape"]``. The groups must be exactly those of the interpreted run, which
stays the fallback for nodes the shadow run could not evaluate.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from modeloptim.torch.trace import graph_readers, shared_input_groups

from .shared_models import TinyMoE


def _detail(groups: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (tuple(g.names), g.producer, g.exclusive, g.source, g.reason, g.in_features) for g in groups
    ]


@pytest.fixture
def interpreter_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    runs: list[int] = []
    orig = graph_readers._ShapeRecorder.run

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(graph_readers._ShapeRecorder, "run", counted)
    return runs


def _without_trace_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop the recorded shapes before the readers look (the previous behaviour)."""
    orig = graph_readers.GraphReaders.__init__

    def init(self: Any, model: Any, gc: Any, *args: Any) -> None:
        for _, root in gc:
            for node in gc[root].nodes:
                node.meta.pop("mo_shape", None)
        orig(self, model, gc, *args)

    monkeypatch.setattr(graph_readers.GraphReaders, "__init__", init)


def _compare(
    model: torch.nn.Module, example: Any, runs: list[int], monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    with torch.no_grad():
        fast = shared_input_groups(model, example)
        assert runs == []  # no second run of the graph
        _without_trace_shapes(monkeypatch)
        slow = shared_input_groups(model, example)
    assert runs  # the fallback did interpret the graph
    assert _detail(fast) == _detail(slow)
    return fast


def test_moe_rows_seen_through_without_a_second_run(interpreter_runs, monkeypatch):
    torch.manual_seed(0)
    groups = _compare(TinyMoE(), torch.randn(2, 6, 16), interpreter_runs, monkeypatch)
    assert [g.names for g in groups] == [["router", "experts.0", "experts.1", "experts.2"]]
    assert groups[0].producer == "ln"  # needs the shapes of h[idx] and h.view(-1, d)


@pytest.mark.hf
def test_llama_lm_head_slice_seen_through_without_a_second_run(interpreter_runs, monkeypatch):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = {"input_ids": torch.randint(0, 128, (2, 10))}
    groups = _compare(model, ids, interpreter_runs, monkeypatch)
    assert len(groups) == 9
    lm = next(g for g in groups if g.names == ["lm_head"])
    assert lm.producer == "model.norm"  # seen through hidden_states[:, -0:, :]
