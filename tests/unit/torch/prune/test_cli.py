"""``modeloptim prune`` command."""

from __future__ import annotations

import json

import pytest
import torch

from modeloptim.cli.main import main


def _net() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 8, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 5),
    ).eval()
    return m, torch.randn(1, 3, 8, 8)


def test_json_report_and_saved_model(tmp_path, capsys) -> None:
    out = tmp_path / "p.pt"
    rc = main(
        [
            "prune",
            "--model",
            f"{__name__}:_net",
            "--flops",
            "50%",
            "--channel-divisor",
            "1",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["after"]["flops"] <= 0.5 * rep["before"]["flops"]
    assert rep["after"]["flops"] >= 0.4 * rep["before"]["flops"]
    assert out.exists()
    import modeloptim.torch.opt as mto

    restored = mto.restore(_net()[0], out)
    assert restored[0].out_channels == rep["subnet"]["0.out_channels"]


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["prune", "--model", "resnet"], "give at least one budget"),
        (["prune", "--model", "resnet", "--flops", "half"], "--flops: expected a percentage"),
        (["prune", "--model", "no_such_mod:f", "--flops", "50%"], "--model: cannot import"),
    ],
)
def test_bad_input_exits_2(argv, msg, capsys) -> None:
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_text_report_tables(capsys) -> None:
    rc = main(["prune", "--model", f"{__name__}:_net", "--params", "60%", "--channel-divisor", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "modeloptim prune" in out
    assert "kept channels per group" in out
    ratio_line = next(line for line in out.splitlines() if "ratio" in line)
    ratio = float(ratio_line.replace("│", " ").split()[1])
    assert 0.3 <= ratio <= 0.6  # params after / before, within the 60% budget
    assert "0.out_channels" in out
