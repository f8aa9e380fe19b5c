"""Bad input gives clear errors; inputs are never modified; outputs are written atomically."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from modeloptim.onnx.autocast import convert_to_mixed_precision
from modeloptim.onnx.model_io import file_sha256
from modeloptim.onnx.quantization import quantize
from tests.unit.onnx.conftest import fvi, make_model


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="onnx_path: no such ONNX file"):
        quantize(str(tmp_path / "nope.onnx"))
    with pytest.raises(FileNotFoundError, match="onnx_path"):
        convert_to_mixed_precision(str(tmp_path / "nope.onnx"))


def test_not_an_onnx_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff\x13" * 10)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        quantize(str(bad), calibration_method="max")
    assert not (tmp_path / "bad.quant.onnx").exists()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"wrong": np.zeros((1, 3, 8, 8), np.float32)}, "missing \\['x'\\], unknown \\['wrong'\\]"),
        (np.zeros((2, 3, 9, 9), np.float32), "dimension 2 must be 8"),
        (np.zeros((2, 3, 8), np.float32), "rank 3"),
        (np.zeros((2, 3, 8, 8), np.int64), "dtype int64"),
        ("calib.txt", "expected a .npy or .npz"),
    ],
)
def test_bad_calibration_data_rejected_before_writing(tmp_path, data, match):
    model = make_model(
        [onnx.helper.make_node("Relu", ["x"], ["y"], name="r")],
        [fvi("x", ["N", 3, 8, 8])],
        [fvi("y", ["N", 3, 8, 8])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    if isinstance(data, str):
        (tmp_path / data).write_text("1 2 3")
        data = str(tmp_path / data)
    before = file_sha256(path)
    with pytest.raises(ValueError, match=match) as info:
        quantize(str(path), calibration_data=data)
    assert "calibration_data" in str(info.value)
    assert file_sha256(path) == before
    assert sorted(os.listdir(tmp_path)) == sorted(
        {"m.onnx", "calib.txt"} & set(os.listdir(tmp_path))
    )


def test_opset_too_old(tmp_path):
    model = make_model(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], [fvi("x", [2])], [fvi("y", [2])], opset=11
    )
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    with pytest.raises(ValueError, match="opset 11 is too old for quantize_mode='fp8'"):
        quantize(
            str(path), "fp8", calibration_data=np.ones((1, 2), np.float32), upgrade_opset=False
        )
    very_old = make_model(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        [fvi("x", [2])],
        [fvi("y", [2])],
        opset=6,
        ir=3,
    )
    onnx.save(very_old, tmp_path / "vold.onnx")
    with pytest.raises(ValueError, match="opset 6 is too old"):
        quantize(str(tmp_path / "vold.onnx"), calibration_data=np.ones((1, 2), np.float32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quantize_mode": "int3"}, "quantize_mode: unknown 'int3'"),
        (
            {"quantize_mode": "int4", "calibration_method": "entropy"},
            "calibration_method: 'entropy'",
        ),
        ({"calibration_method": "awq_lite"}, "calibration_method"),
        ({"high_precision_dtype": "fp64"}, "high_precision_dtype"),
        ({"quantize_mode": "int4", "block_size": 48}, "block_size"),
        ({"sensitivity_budget": -0.1}, "sensitivity_budget: expected a non-negative"),
        ({"sensitivity_budget": "low"}, "sensitivity_budget: expected a non-negative"),
        ({"bias_correction": "yes"}, "bias_correction: expected a bool"),
    ],
)
def test_bad_arguments_named(conv_matmul_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        quantize(conv_matmul_model[0], **kwargs)


def test_input_file_unchanged_and_random_data_warns(conv_matmul_model, tmp_path):
    path = conv_matmul_model[0]
    before = file_sha256(path)
    with pytest.warns(UserWarning, match="RANDOM data"):
        res = quantize(path, "int8", calibration_method="max")
    assert file_sha256(path) == before
    assert res.output_path.endswith("cm.quant.onnx")
    assert os.path.exists(res.output_path)
    with pytest.warns(UserWarning, match="RANDOM data"):
        convert_to_mixed_precision(path, "fp16", output_path=str(tmp_path / "h.onnx"))
    assert file_sha256(path) == before


def test_failed_write_leaves_nothing_behind(conv_matmul_model, tmp_path, monkeypatch):
    path = conv_matmul_model[0]
    out = tmp_path / "out" / "q.onnx"
    out.parent.mkdir()

    def boom(*args, **kwargs):
        with open(args[1], "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", boom)
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(OSError, match="disk full"):
        quantize(path, calibration_data=x, calibration_method="max", output_path=str(out))
    assert os.listdir(out.parent) == []
