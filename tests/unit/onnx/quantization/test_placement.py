"""QDQ node units that onnxruntime fuses, uint8 activations, and reader-aware ranges."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from modeloptim.onnx.quantization import quantize
from modeloptim.onnx.quantization.activation import ACTIVATION_TYPES
from modeloptim.onnx.quantization.calibrators import CALIBRATORS
from modeloptim.onnx.quantization.placement import narrow_ranges
from tests.unit.onnx.conftest import fragile_pair, fvi, make_model, run


def optimized_ops(path, tmp_path) -> collections.Counter:
    """Op types of the graph onnxruntime actually runs (after its QDQ fusions)."""
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "ort_optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return collections.Counter(
        n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node
    )


def _hardswish_nodes(x, out, tag):
    """paddle2onnx's decomposed HardSwish: x * Clip(x + 3, 0, 6) / 6."""
    return [
        helper.make_node("Add", [x, "three"], [f"{tag}_a"], name=f"{tag}_add"),
        helper.make_node("Clip", [f"{tag}_a", "zero", "six"], [f"{tag}_c"], name=f"{tag}_clip"),
        helper.make_node("Mul", [x, f"{tag}_c"], [f"{tag}_m"], name=f"{tag}_mul"),
        helper.make_node("Div", [f"{tag}_m", "six"], [out], name=f"{tag}_div"),
    ]


@pytest.fixture
def cnn_path(tmp_path):
    """x -> Conv -> Mul(k) -> Add(c) -> Relu -> Conv -> HardSwish(decomposed) -> Conv -> y."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
    w3 = rng.standard_normal((4, 8, 3, 3)).astype(np.float32) * 0.3
    inits = [
        numpy_helper.from_array(w1, "W1"),
        numpy_helper.from_array(w2, "W2"),
        numpy_helper.from_array(w3, "W3"),
        numpy_helper.from_array(rng.uniform(0.5, 2, (8, 1, 1)).astype(np.float32), "k"),
        numpy_helper.from_array(np.array([0.25], np.float32), "c"),
        numpy_helper.from_array(np.array(3.0, np.float32), "three"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c1", "k"], ["s1"], name="scale1"),
        helper.make_node("Add", ["s1", "c"], ["b1"], name="shift1"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2"),
        *_hardswish_nodes("c2", "h2", "hs"),
        helper.make_node("Conv", ["h2", "W3"], ["y"], name="conv3", pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, [fvi("x", ["N", 3, 12, 12])], [fvi("y", ["N", 4, 12, 12])], inits)
    path = tmp_path / "cnn.onnx"
    onnx.save(model, path)
    return path


def _data(n=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("act", ["uint8", "int8"])
def test_units_placement_runs_integer_convs_in_onnxruntime(cnn_path, tmp_path, act):
    x = _data()
    units, inputs = tmp_path / f"u_{act}.onnx", tmp_path / f"i_{act}.onnx"
    kw = {"calibration_data": x, "calibration_method": "max", "activation_type": act}
    res = quantize(cnn_path, "int8", output_path=units, **kw)
    quantize(cnn_path, "int8", output_path=inputs, qdq_placement="inputs", **kw)
    onnx.checker.check_model(onnx.load(units), full_check=True)
    ops_units = optimized_ops(units, tmp_path)
    ops_inputs = optimized_ops(inputs, tmp_path)
    # Every Conv whose output is not the graph output becomes an integer kernel with
    # DQ -> Conv -> Q units (conv3 writes the float result). With Q/DQ on the inputs only,
    # at most conv1 fuses (with uint8, conv1 -> Relu -> Q of conv2's input forms a unit by
    # accident), and conv2 runs in float on dequantized tensors.
    assert ops_units["QLinearConv"] == 2, ops_units
    assert ops_units["Conv"] + ops_units["FusedConv"] == 1
    accidental = 1 if act == "uint8" else 0
    assert ops_inputs["QLinearConv"] == accidental, ops_inputs
    assert ops_inputs["Conv"] + ops_inputs["FusedConv"] == 3 - accidental
    # The folded affine and the rewritten HardSwish are in the saved graph.
    saved = collections.Counter(n.op_type for n in onnx.load(units).graph.node)
    assert saved["HardSwish"] == 1
    assert saved["Mul"] == 0
    assert saved["Div"] == 0
    assert res.opset == 14
    # The integer kernels compute what the QDQ graph says: run it literally (no fusion).
    fused, literal = run(str(units), {"x": x}), run(str(units), {"x": x}, optimize=False)
    ref = run(str(cnn_path), {"x": x})[0]
    scale = np.abs(ref).max()
    np.testing.assert_allclose(fused[0], literal[0], rtol=0, atol=0.02 * scale)
    err = np.abs(fused[0] - ref).max() / scale
    assert 1e-4 < err < 0.06


def test_relu_folds_into_uint8_q_only(cnn_path, tmp_path):
    x = _data()
    out = tmp_path / "u.onnx"
    quantize(cnn_path, "int8", calibration_data=x, activation_type="uint8", output_path=out)
    model = onnx.load(out)
    q_inputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    # uint8: one Q after the Relu (onnxruntime drops the Relu into it); zero point 0 there.
    assert "r1" in q_inputs
    assert "b1" not in q_inputs
    zp = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q_r1 = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r1")
    assert zp[q_r1.input[2]].dtype == np.uint8
    assert int(zp[q_r1.input[2]]) == 0
    # HardSwish reads the conv2 output: its Q range starts at -3 (below that HardSwish is 0).
    q_c2 = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "c2")
    scale, z = float(zp[q_c2.input[1]]), int(zp[q_c2.input[2]])
    assert -z * scale == pytest.approx(max(-3.0, _float_min(cnn_path, x, "c2")), rel=0.01)
    out8 = tmp_path / "s.onnx"
    quantize(cnn_path, "int8", calibration_data=x, activation_type="int8", output_path=out8)
    q8 = {n.input[0] for n in onnx.load(out8).graph.node if n.op_type == "QuantizeLinear"}
    assert "b1" in q8  # symmetric int8 cannot absorb the Relu: Q goes before it


def _float_min(path, x, tensor):
    from modeloptim.onnx.ort_utils import with_outputs

    model = with_outputs(onnx.load(path), [tensor])
    return float(run(model, {"x": x})[0].min())


def test_uint8_params_hand_computed_and_match_onnxruntime():
    act = ACTIVATION_TYPES.get("uint8")
    scale, zp = act.params(-1.0, 3.0)
    assert float(scale) == pytest.approx(4.0 / 255.0)
    assert zp.dtype == np.uint8
    assert int(zp) == 64
    scale0, zp0 = act.params(0.5, 2.0)  # the range is widened to include 0
    assert int(zp0) == 0
    assert float(scale0) == pytest.approx(2.0 / 255.0)
    x = np.linspace(-2, 4, 97, dtype=np.float32).reshape(1, -1)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")]
    model = make_model(nodes, [fvi("x", [1, 97])], [fvi("y", [1, 97])], inits)
    got = run(model, {"x": x}, optimize=False)[0]
    np.testing.assert_allclose(act.fake_quantize(x, scale, zp), got, rtol=0, atol=1e-6)
    # Saturation at both ends of [lo, hi], exactly zero at 0.
    assert got.min() == pytest.approx(-64 * 4 / 255)
    assert got.max() == pytest.approx(191 * 4 / 255)


def test_calibrator_ranges_track_min_and_max():
    calib = CALIBRATORS.create("max")
    calib.observe("t", np.array([-0.5, 2.0, 1.0]))
    calib.observe("t", np.array([-1.5, 0.0]))
    assert calib.ranges() == {"t": (-1.5, 2.0)}
    pct = CALIBRATORS.create("percentile", percentile=50.0)
    values = np.concatenate([np.full(99, 1.0), [100.0], [-0.5]]).astype(np.float32)
    for p in (0, 1):
        pct.observe("t", values, p)
    lo, hi = pct.ranges()["t"]
    assert lo == -0.5
    assert hi < 2.0


def test_narrow_ranges_only_when_every_reader_clamps():
    inits = [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "W")]
    nodes = [
        helper.make_node("HardSwish", ["a"], ["h"], name="hs"),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        helper.make_node("Conv", ["b", "W"], ["c"], name="conv"),
        helper.make_node("HardSigmoid", ["d"], ["g"], name="hsig", alpha=0.25, beta=0.5),
    ]
    model = make_model(
        nodes,
        [fvi(n, [1, 2, 2, 2]) for n in "abd"],
        [fvi(n, [1, 2, 2, 2]) for n in ("h", "r", "c", "g")],
        inits,
        opset=14,
    )
    got = narrow_ranges(model, {"a": (-10.0, 5.0), "b": (-10.0, 5.0), "d": (-10.0, 5.0)})
    assert got["a"] == (-3.0, 5.0)
    assert got["b"] == (-10.0, 5.0)  # the Conv reader needs the whole range
    assert got["d"] == (-2.0, 2.0)  # HardSigmoid saturates outside [-beta/alpha, (1-beta)/alpha]


def test_output_sensitivity_finds_the_fragile_node(tmp_path):
    path, data = fragile_pair(tmp_path)
    res = quantize(
        path,
        "int8",
        calibration_data=data,
        output_path=tmp_path / "s.onnx",
        skip_sensitive_nodes=1,
        sensitivity_metric="output",
        calibration_batch_size=8,
    )
    assert res.quantized_nodes == ["plain"]
    assert res.sensitivity["fragile"] > 5 * res.sensitivity["plain"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"activation_type": "uint8", "quantize_mode": "fp8"}, "activation_type"),
        ({"activation_type": "int4"}, "activation_type"),
        ({"qdq_placement": "outputs"}, "qdq_placement"),
        ({"sensitivity_metric": "global"}, "sensitivity_metric"),
        ({"sensitivity_samples": 0}, "sensitivity_samples"),
    ],
)
def test_bad_new_options_raise_before_writing(cnn_path, tmp_path, kwargs, match):
    before = cnn_path.read_bytes()
    out = tmp_path / "never.onnx"
    kwargs = {"quantize_mode": "int8", **kwargs}
    with pytest.raises(ValueError, match=match):
        quantize(cnn_path, calibration_data=_data(2), output_path=out, **kwargs)
    assert not out.exists()
    assert cnn_path.read_bytes() == before


def test_output_q_keeps_full_range_with_histogram_calibration(cnn_path, tmp_path):
    x = _data()
    out = tmp_path / "p.onnx"
    quantize(
        cnn_path,
        "int8",
        calibration_data=x,
        calibration_method="percentile",
        percentile=50.0,  # clips the inputs of the Convs hard
        activation_type="uint8",
        output_path=out,
    )
    model = onnx.load(out)
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q_c2 = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "c2")
    scale, zp = float(values[q_c2.input[1]]), int(values[q_c2.input[2]])
    c2_max = _float_max(cnn_path, x, "c2")
    # The Conv output's Q only exists for the QLinearConv fusion: its top is the observed max.
    assert (255 - zp) * scale == pytest.approx(c2_max, rel=0.01)
    q_r1 = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r1")
    r1_top = (255 - int(values[q_r1.input[2]])) * float(values[q_r1.input[1]])
    assert r1_top < 0.9 * _float_max(cnn_path, x, "r1")  # a Conv input: clipped by percentile


def _float_max(path, x, tensor):
    from modeloptim.onnx.ort_utils import with_outputs

    model = with_outputs(onnx.load(path), [tensor])
    return float(run(model, {"x": x})[0].max())


def _q_inputs(path) -> list[list[str]]:
    graph = onnx.load(str(path)).graph
    return sorted(list(n.input) for n in graph.node if n.op_type == "QuantizeLinear")


@pytest.mark.parametrize(("mode", "expected"), [("int8", "units"), ("fp8", "inputs")])
def test_default_placement_per_mode(cnn_path, tmp_path, mode, expected):
    """int8 defaults to fusable units, fp8 (no runtime unit to fuse) to Q/DQ on inputs."""
    x = _data()
    paths = {}
    for place in (None, "units", "inputs"):
        out = tmp_path / f"{mode}_{place}.onnx"
        quantize(cnn_path, mode, calibration_data=x, output_path=out, qdq_placement=place)
        paths[place] = out
    assert _q_inputs(paths["units"]) != _q_inputs(paths["inputs"])  # the choice is visible
    assert _q_inputs(paths[None]) == _q_inputs(paths[expected])
