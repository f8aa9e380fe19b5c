import json

import pytest

from modeloptim.cli.main import main


def test_trace_zoo_text_report(capsys):
    assert main(["trace", "--model", "llama-tiny"]) == 0
    out = capsys.readouterr().out
    assert "5 searchable groups" in out
    assert "model.embed_tokens.embedding_dim" in out
    assert "Frozen groups" in out
    assert "output of the model" in out


def test_trace_json_lists_groups_and_failures(capsys):
    assert (
        main(
            [
                "trace",
                "--model",
                "tests.unit.torch.trace.hand_models:ControlFlowNet",
                "--input-shape",
                "3,4",
                "--json",
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["model"] == "ControlFlowNet"
    assert [f["module"] for f in rep["failed_modules"]] == ["branch"]
    assert "control flow" in rep["failed_modules"][0]["message"]
    names = [g["name"] for g in rep["searchable_groups"]]
    assert names == ["mid.out_features"]
    assert all(g["reasons"] for g in rep["frozen_groups"])


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["trace", "--model", "no-such-model"], "unknown zoo name"),
        (
            ["trace", "--model", "tests.unit.torch.trace.hand_models:ControlFlowNet"],
            "pass --input-shape",
        ),
        (["trace", "--model", "nosuchpkg.mod:f"], "cannot import"),
        (
            [
                "trace",
                "--model",
                "tests.unit.torch.trace.hand_models:ControlFlowNet",
                "--input-shape",
                "3,x",
            ],
            "--input-shape",
        ),
        (
            [
                "trace",
                "--model",
                "tests.unit.torch.trace.hand_models:ControlFlowNet",
                "--input-shape",
                "3,5",
            ],
            "example_input: the model's forward failed",
        ),
    ],
)
def test_trace_bad_input_one_line_error(capsys, argv, msg):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("modeloptim trace: error:")]
    assert len(errors) == 1
    assert msg in errors[0]
    assert lines[-1] == errors[0]  # progress lines come before, no traceback after
