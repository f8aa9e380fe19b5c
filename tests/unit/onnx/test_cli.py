"""``modeloptim onnx-quantize`` / ``onnx-autocast`` and ``python -m`` entry points."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx

from modeloptim.cli.main import main


def test_onnx_quantize_cli_json(conv_matmul_model, tmp_path, capsys):
    path = conv_matmul_model[0]
    data = tmp_path / "calib.npy"
    np.save(data, np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "q.onnx"
    code = main(
        [
            "onnx-quantize",
            path,
            "--mode",
            "int8",
            "--method",
            "max",
            "--calibration-data",
            str(data),
            "--output",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["details"]["quantized_nodes"] == ["conv", "mm"]
    onnx.checker.check_model(onnx.load(out))


def test_onnx_autocast_cli(conv_matmul_model, tmp_path, capsys):
    data = tmp_path / "ref.npz"
    np.savez(data, x=np.ones((2, 3, 8, 8), np.float32))
    out = tmp_path / "h.onnx"
    code = main(
        [
            "onnx-autocast",
            conv_matmul_model[0],
            "--reference-data",
            str(data),
            "--output",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["converted nodes"] == 4


def test_cli_bad_input_one_line_exit_2(tmp_path, capsys):
    assert main(["onnx-quantize", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no such ONNX file" in err


def test_python_m_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "modeloptim.onnx.quantization", str(tmp_path / "nope.onnx")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "no such ONNX file" in proc.stderr


def test_onnx_quantize_cli_uint8_units(conv_matmul_model, tmp_path, capsys):
    path = conv_matmul_model[0]
    data = tmp_path / "calib.npy"
    np.save(data, np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "q8.onnx"
    args = ["onnx-quantize", path, "--calibration-data", str(data), "--output", str(out)]
    code = main([*args, "--activation-type", "uint8", "--skip-sensitive", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["details"]["quantized_nodes"]) == 1  # one of conv/mm measured fragile
    zps = [i for i in onnx.load(out).graph.initializer if i.name.endswith("_zero_point")]
    assert onnx.TensorProto.UINT8 in {z.data_type for z in zps}


def test_onnx_quantize_cli_budget_and_bias_correction(conv_matmul_model, tmp_path, capsys):
    path = conv_matmul_model[0]
    data = tmp_path / "calib.npy"
    np.save(data, np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "qb.onnx"
    args = ["onnx-quantize", path, "--calibration-data", str(data), "--output", str(out)]
    code = main([*args, "--sensitivity-budget", "0", "--bias-correction", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["details"]["quantized_nodes"] == []  # a zero budget keeps every node float
    code = main([*args, "--sensitivity-budget", "1e9", "--bias-correction", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["details"]["quantized_nodes"]) == ["conv", "mm"]
    assert any("bias correction on 1 nodes" in n for n in report["details"]["notes"])
