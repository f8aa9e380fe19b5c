"""Shared CLI pieces: argument types, timing, report tables, delegated subcommands."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from modeloptim.cli.common import (
    StageTimer,
    add_command,
    check_text_file,
    format_seconds,
    model_label,
    positive_int,
    print_json,
    print_table,
    register_delegated,
)
from modeloptim.cli.main import CliError, build_parser


def test_positive_int():
    assert positive_int("3") == 3
    for bad in ("0", "-2", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"positive integer, got '{bad}'"):
            positive_int(bad)


def test_stage_timer_total_is_the_sum(monkeypatch):
    ticks = iter([10.0, 10.25, 20.0, 21.5])
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    timer = StageTimer()
    with timer.stage("load"):
        pass
    with timer.stage("run"):
        pass
    assert timer.with_total() == {"load": 0.25, "run": 1.5, "total": 1.75}
    assert format_seconds(timer.with_total()) == "load 0.2, run 1.5, total 1.8"


def test_check_text_file_and_model_label(tmp_path: Path):
    check_text_file(None)
    f = tmp_path / "t.txt"
    f.write_text("hi")
    check_text_file(f)
    with pytest.raises(CliError, match=r"--text: file .*missing.txt.* does not exist"):
        check_text_file(tmp_path / "missing.txt")
    assert model_label("./m") == "./m"
    assert "SmolLM2-135M" in model_label(None)


def test_print_table_and_json(capsys):
    print_table("T", ("metric", "a", "b"), [("x", "1.0", "2.0")], ["note one"])
    out = capsys.readouterr().out
    assert "metric" in out
    assert "2.0" in out
    assert out.rstrip().endswith("note one")
    with pytest.raises(ValueError, match="rows: expected 3 cells per row"):
        print_table("T", ("metric", "a", "b"), [("x", "1.0")])
    print_json({"p": Path("a/b"), "n": 1})
    assert capsys.readouterr().out == '{\n  "p": "a/b",\n  "n": 1\n}\n'


def test_add_command_and_delegated_command_share_help_layout(capsys):
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers()
    p = add_command(sub, "go", help="h", description="line one\n  kept indent", epilog="EX")
    assert isinstance(p.formatter_class, type)
    assert p.format_help().count("  kept indent") == 1
    register_delegated(sub, "onnxq", "modeloptim.onnx.quantization.cli", help="h", description="d")
    args = parser.parse_args(["onnxq", "model.onnx"])
    from modeloptim.onnx.quantization import cli

    assert args.func is cli.run


@pytest.mark.parametrize("name", ["onnx-quantize", "onnx-autocast"])
def test_onnx_subcommands_are_registered(name, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([name, "--help"])
    out = capsys.readouterr().out
    assert f"modeloptim {name}" in out
    assert "example" in out.lower()
