"""Conv-affine folding and HardSwish chain rewriting keep the model's outputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from modeloptim.onnx.fold_affine import fold_conv_affine
from modeloptim.onnx.fuse_activations import fuse_hardswish, hardswish_reference
from modeloptim.onnx.sanitize import default_opset
from tests.unit.onnx.conftest import fvi, make_model, run


def test_fold_conv_affine_is_exact_and_skips_non_channel_constants():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    k = rng.uniform(0.5, 2.0, (1, 4, 1, 1)).astype(np.float32)
    spatial = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)  # not per channel
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(k, "k"),
        numpy_helper.from_array(np.array([0.5], np.float32), "c"),
        numpy_helper.from_array(spatial, "sp"),
        numpy_helper.from_array(w.copy(), "W2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["k", "a"], ["b"], name="mul"),
        helper.make_node("Add", ["b", "c"], ["y"], name="add"),
        helper.make_node("Conv", ["x", "W2"], ["d"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["d", "sp"], ["z"], name="add_spatial"),
    ]
    model = make_model(
        nodes, [fvi("x", [2, 2, 6, 6])], [fvi("y", [2, 4, 6, 6]), fvi("z", [2, 4, 6, 6])], inits
    )
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    ref = run(model, {"x": x}, optimize=False)
    assert fold_conv_affine(model) == 2
    assert [n.name for n in model.graph.node] == ["conv", "conv2", "add_spatial"]
    onnx.checker.check_model(model)
    got = run(model, {"x": x}, optimize=False)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
    # Independent check of the folded bias: k * 0 + 0.5 for a Conv without bias.
    bias = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}[
        model.graph.node[0].input[2]
    ]
    np.testing.assert_allclose(bias, np.full(4, 0.5), rtol=1e-6)


def test_fuse_hardswish_rewrites_the_chain_and_upgrades_opset():
    consts = [
        numpy_helper.from_array(np.array(v, np.float32), n)
        for n, v in (("three", 3.0), ("zero", 0.0), ("six", 6.0))
    ]
    nodes = [
        helper.make_node("Add", ["x", "three"], ["a"], name="add"),
        helper.make_node("Clip", ["a", "zero", "six"], ["c"], name="clip"),
        helper.make_node("Mul", ["c", "x"], ["m"], name="mul"),
        helper.make_node("Div", ["m", "six"], ["y"], name="div"),
        helper.make_node("Add", ["y", "three"], ["z"], name="after"),
    ]
    model = make_model(nodes, [fvi("x", [64])], [fvi("z", [64])], consts, opset=13)
    x = np.linspace(-6, 6, 64, dtype=np.float32)
    model, count = fuse_hardswish(model)
    assert count == 1
    assert default_opset(model) == 14
    assert [n.op_type for n in model.graph.node] == ["HardSwish", "Add"]
    got = run(model, {"x": x}, optimize=False)[0]
    np.testing.assert_allclose(got, hardswish_reference(x) + 3.0, rtol=0, atol=1e-5)


def test_fuse_hardswish_leaves_other_chains():
    consts = [
        numpy_helper.from_array(np.array(v, np.float32), n)
        for n, v in (("three", 3.0), ("zero", 0.0), ("five", 5.0), ("six", 6.0))
    ]
    nodes = [  # Clip to 5, not 6: not a HardSwish
        helper.make_node("Add", ["x", "three"], ["a"], name="add"),
        helper.make_node("Clip", ["a", "zero", "five"], ["c"], name="clip"),
        helper.make_node("Mul", ["x", "c"], ["m"], name="mul"),
        helper.make_node("Div", ["m", "six"], ["y"], name="div"),
    ]
    model = make_model(nodes, [fvi("x", [8])], [fvi("y", [8])], consts, opset=13)
    model, count = fuse_hardswish(model)
    assert count == 0
    assert default_opset(model) == 13
    assert len(model.graph.node) == 4
