import json

import pytest
import torch

from modeloptim.torch.trace import analyze
from modeloptim.torch.trace.report import print_trace_report, trace_report

from .hand_models import ControlFlowNet, FlattenLinearNet


def test_report_text_lists_groups_reasons_and_failures(capsys):
    rep = print_trace_report(ControlFlowNet().eval(), torch.randn(3, 4))
    text = capsys.readouterr().out
    assert text.strip() == rep.to_text().strip()
    assert "1 searchable groups" in text
    assert "mid.out_features" in text
    assert "Modules that failed to trace" in text
    assert "branch" in text
    assert "control flow" in text
    assert "module failed to trace" in text  # why inp.out_features is frozen
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["symbols"]["searchable"] == 1


def test_report_from_existing_result_and_flatten_layout():
    model, x = FlattenLinearNet().eval(), torch.randn(2, 1, 8, 8)
    res = analyze(model, x)
    rep = trace_report(model, result=res)
    g = next(g for g in rep.searchable if g.name == "conv2.out_channels")
    fc1 = next(m for m in g.members if m.tensor == "fc1.weight")
    assert fc1.layout == "80 of 80 in blocks of 16"
    frozen = {r for g in rep.frozen for r in g.reasons}
    assert any("spatial" in r or "dim 2 of the output of conv2" in r for r in frozen)
    with pytest.raises(ValueError, match="example_input: required"):
        trace_report(model)
