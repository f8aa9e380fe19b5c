"""ONNX export of quantized models: onnx.checker passes, onnxruntime matches PyTorch."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from modeloptim.torch.quantization.config import presets
from modeloptim.torch.quantization.export_onnx import export_onnx
from modeloptim.torch.quantization.model_quant import quantize

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.onnx


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(x.flatten(1))


def _quantized_cnn(cfg):
    torch.manual_seed(0)
    model = CNN().eval()
    data = [torch.randn(4, 3, 16, 16) for _ in range(2)]

    def loop(m):
        for x in data:
            m(x)

    return quantize(model, copy.deepcopy(cfg), loop)


def _ort(proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, feeds, strict=True)))[0]


def _ops(proto):
    return [n.op_type for n in proto.graph.node]


@pytest.mark.parametrize(
    ("name", "cfg", "qtype"),
    [("int8", presets.INT8_DEFAULT_CFG, 3), ("fp8", presets.FP8_DEFAULT_CFG, 17)],
)
def test_cnn_runs_in_onnxruntime(tmp_path, name, cfg, qtype):
    model = _quantized_cnn(cfg)
    x = torch.randn(2, 3, 16, 16)
    proto = export_onnx(model, (x,), tmp_path / f"{name}.onnx")
    onnx.checker.check_model(onnx.load(tmp_path / f"{name}.onnx"), full_check=True)
    ops = _ops(proto)
    assert ops.count("QuantizeLinear") == 6  # input + weight of 3 layers
    assert ops.count("DequantizeLinear") == 6
    q_types = {
        a.i
        for n in proto.graph.node
        if n.op_type == "QuantizeLinear"
        for a in n.attribute
        if a.name == "output_dtype"
    }
    assert q_types == {qtype}
    with torch.no_grad():
        ref = model(x).numpy()
    out = _ort(proto, [x.numpy()])
    # ONNX divides by the scale, we multiply by its inverse: float32-noise-level differences
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-3 * np.abs(ref).max())


def test_cnn_int8_out_of_range_input_clips_like_narrow_range(tmp_path):
    model = _quantized_cnn(presets.INT8_DEFAULT_CFG)
    x = torch.randn(2, 3, 16, 16) * 10  # far beyond the calibrated amax
    proto = export_onnx(model, (x,))
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(_ort(proto, [x.numpy()]), ref, rtol=0, atol=2e-3 * np.abs(ref).max())


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        use_cache=False,
    )
    return LlamaForCausalLM(cfg).eval()


class _Logits(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, ids):
        return self.m(input_ids=ids, use_cache=False).logits


@pytest.mark.hf
@pytest.mark.parametrize(
    "cfg", [presets.INT8_DEFAULT_CFG, presets.FP8_DEFAULT_CFG], ids=["int8", "fp8"]
)
def test_transformer_runs_in_onnxruntime(cfg):
    model = _tiny_llama()
    ids = torch.randint(0, 128, (1, 12))
    quantize(model, copy.deepcopy(cfg), lambda m: m(input_ids=ids))
    wrapped = _Logits(model).eval()
    proto = export_onnx(wrapped, (ids,))
    onnx.checker.check_model(proto, full_check=True)
    # 7 weights + 4 inputs: q/k/v and gate/up share one input Q/DQ (same tensor, same amax)
    assert _ops(proto).count("QuantizeLinear") == 11
    with torch.no_grad():
        ref = wrapped(ids).numpy()
    out = _ort(proto, [ids.numpy()])
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-2 * np.abs(ref).max())


def test_int4_blocked_weights_opset21(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    quantize(model, copy.deepcopy(presets.INT4_BLOCKWISE_WEIGHT_ONLY_CFG), None)
    x = torch.randn(3, 256)
    proto = export_onnx(model, (x,))
    onnx.checker.check_model(proto, full_check=True)
    blocked = [
        n
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear"
        and any(a.name == "block_size" and a.i == 128 for a in n.attribute)
    ]
    assert len(blocked) == 2
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(_ort(proto, [x.numpy()]), ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    with pytest.raises(ValueError, match=r"opset_version: .* >= 21"):
        export_onnx(model, (x,), opset_version=19)


@pytest.mark.parametrize(
    ("cfg", "op"),
    [(presets.NVFP4_DEFAULT_CFG, "NVFP4FakeQuant"), (presets.MXFP8_DEFAULT_CFG, "MXFakeQuant")],
)
def test_nvfp4_mx_custom_domain(tmp_path, cfg, op):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    x = torch.randn(3, 64)
    quantize(model, copy.deepcopy(cfg), lambda m: m(x))
    with torch.no_grad():
        before = model(x)
    proto = export_onnx(model, (x,))
    onnx.checker.check_model(proto)
    nodes = [n for n in proto.graph.node if n.op_type == op]
    assert len(nodes) == 4
    assert {n.domain for n in nodes} == {"com.modeloptim"}
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)  # quantizers restored
