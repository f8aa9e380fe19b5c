"""``TensorQuantizer``'s CUDA fast dispatch (a kernel call resolved once per input signature).

Lives here because it needs the kernels: Triton's CPU interpreter runs them on CPU tensors
(conftest.py), and the plan is replayed directly (``forward`` takes it only for CUDA inputs).
The oracle is the format's PyTorch path, which the kernels equal bit for bit.
"""

import pytest
import torch

pytest.importorskip("triton")

from modeloptim.torch.quantization.nn.modules.tensor_quantizer import (
    TensorQuantizer,
)

NVFP4 = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}}
CASES = [
    ("fp8 per-tensor", {"num_bits": (4, 3), "axis": None}, (6, 64), ()),
    ("int8 per-tensor", {"num_bits": 8, "axis": None}, (2, 3, 32), ()),
    ("int8 per-row", {"num_bits": 8, "axis": 0}, (24, 48), (24, 1)),
    ("int4 static block128", {"num_bits": 4, "block_sizes": {-1: 128}}, (4, 256), (8, 1)),
    ("nvfp4 static global amax", NVFP4, (8, 64), ()),
]


def _quantizer(cfg, shape, amax_shape, dtype):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3).to(dtype)
    q = TensorQuantizer(cfg)
    amax = q.format.compute_amax(x)
    assert amax is not None
    q.amax = amax.reshape(amax_shape) * 0.8  # some values clip
    return q, x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("name", "cfg", "shape", "amax_shape"), CASES, ids=[c[0] for c in CASES])
def test_plan_equals_format_path(name, cfg, shape, amax_shape, dtype):
    q, x = _quantizer(cfg, shape, amax_shape, dtype)
    plan = q._plan_fast(x, q.amax)
    assert plan is not None, name
    ref = q.format.fake_quant(x, q.amax)  # CPU: the PyTorch path
    for _ in range(2):  # first call plans, second replays
        out = q._fast_fake_quant(x, q.amax)
        assert out is not None
        assert out.dtype == x.dtype
        assert torch.equal(out, ref)


def test_plan_is_redone_when_amax_or_shape_changes():
    q, x = _quantizer({"num_bits": 8, "axis": None}, (4, 32), (), torch.float32)
    first = q._fast_fake_quant(x, q.amax)
    key = q._fast_plan[0]
    with torch.no_grad():
        q.amax.mul_(0.25)  # in place: same tensor, new version
    second = q._fast_fake_quant(x, q.amax)
    assert q._fast_plan[0] != key
    assert torch.equal(second, q.format.fake_quant(x, q.amax))
    assert not torch.equal(first, second)
    x2 = torch.randn(3, 32)
    assert torch.equal(q._fast_fake_quant(x2, q.amax), q.format.fake_quant(x2, q.amax))


DYNAMIC = [
    ("fp8 dynamic block32", {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic"}}),
    ("int4 dynamic block16", {"num_bits": 4, "block_sizes": {-1: 16, "type": "dynamic"}}),
    (
        "mxfp4",
        {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    ),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("name", "cfg"), DYNAMIC, ids=[c[0] for c in DYNAMIC])
def test_dynamic_block_plan_equals_format_path(name, cfg, dtype):
    torch.manual_seed(2)
    x = (torch.randn(2, 6, 64) * 3).to(dtype)
    q = TensorQuantizer(cfg)
    assert q.format.is_dynamic, name
    assert q._plan_fast(x, None) is not None, name
    for scale in (1.0, 0.01):  # second call replays the plan on new data
        xs = x * scale
        out = q._fast_fake_quant(xs, None)
        assert out is not None
        assert out.shape == xs.shape
        assert torch.equal(out, q.format.fake_quant(xs, None)), name


@pytest.mark.parametrize(
    ("cfg", "shape", "why"),
    [
        ({"num_bits": 4, "block_sizes": {-1: 128}}, (4, 200), "padded blocks"),
        ({"num_bits": 8, "axis": None, "type": "dynamic"}, (4, 64), "dynamic per-tensor"),
        ({**NVFP4, "type": "dynamic"}, (4, 64), "nvfp4 dynamic global amax"),
    ],
)
def test_no_plan_where_the_view_or_scales_depend_on_more(cfg, shape, why):
    x = torch.randn(shape)
    q = TensorQuantizer(cfg)
    amax = q.format.compute_amax(x)
    if amax is not None:
        q.amax = amax
    assert q._plan_fast(x, q.amax) is None, why


def test_non_contiguous_input_gets_no_plan():
    q, x = _quantizer({"num_bits": 8, "axis": None}, (8, 32), (), torch.float32)
    assert q._plan_fast(x.t(), q.amax) is None


def test_prepared_launchers_equal_the_wrappers():
    from modeloptim.torch.quantization.triton import blockwise as bw
    from modeloptim.torch.quantization.triton import elementwise as ew

    torch.manual_seed(3)
    for dtype in (torch.float32, torch.bfloat16):
        x = (torch.randn(16, 64) * 4).to(dtype)
        row = x.float().abs().amax(dim=1, keepdim=True) * 0.7
        one = x.float().abs().amax() * 0.9
        pairs = [
            (
                ew.fake_quant_int.prepare(x, row, 8, False, True),
                ew.fake_quant_int(x, row, 8, False, True),
            ),
            (ew.fake_quant_fp8.prepare(x, one, 4), ew.fake_quant_fp8(x, one, 4)),
            (
                bw.fake_quant_nvfp4.prepare(x.view(-1, 16), one),
                bw.fake_quant_nvfp4(x.view(-1, 16), one),
            ),
        ]
        for launch, ref in pairs:
            assert launch is not None
            x_in = x if ref.shape == x.shape else x.view(-1, 16)
            out = launch(x_in)
            assert torch.equal(out, ref)
            assert torch.equal(launch(x_in * 0.5), launch(x_in * 0.5))  # reusable
    assert ew.fake_quant_fp8.prepare(x, torch.ones(3, 3), 4) is None  # layout not taken


def test_cached_linear_skips_only_a_hookless_disabled_output_quantizer():
    from torch import nn

    import modeloptim.torch.quantization as mtq

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(32, 16))
    x = torch.randn(3, 32)
    mtq.quantize(model, mtq.INT8_DEFAULT_CFG, lambda m: m(x))
    layer = model[0]
    assert not layer.output_quantizer.is_enabled
    with torch.no_grad():
        ref = model(x)
        seen = []
        with mtq.cache_quantized_weights(model):
            assert torch.equal(model(x), ref)
            handle = layer.output_quantizer.register_forward_hook(
                lambda m, i, o: seen.append(o.shape)
            )
            assert torch.equal(model(x), ref)
            handle.remove()
            assert seen == [torch.Size([3, 16])]  # the hook still runs
            handle = layer.input_quantizer.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
            doubled = model(x)
            handle.remove()
            assert not torch.equal(doubled, ref)  # the input quantizer's hook ran too
            layer.output_quantizer.enable()
            layer.output_quantizer.amax = ref.abs().amax()
            out = model(x)
        assert torch.equal(out, layer.output_quantizer(ref))


def test_memo_shares_only_equal_quantizers_on_the_same_unchanged_input():
    torch.manual_seed(5)
    cfg = {"num_bits": (4, 3), "axis": None}
    x = torch.randn(4, 64) * 3
    a = TensorQuantizer(cfg, amax=2.0)
    b = TensorQuantizer(cfg, amax=2.0)  # same format and amax value: same output
    c = TensorQuantizer(cfg, amax=1.0)
    d = TensorQuantizer({"num_bits": (5, 2), "axis": None}, amax=2.0)
    memo = [None]
    out_a = a._fast_fake_quant(x, a.amax, memo)
    assert a._fast_fake_quant(x, a.amax, None) is not out_a  # no memo: a new launch
    assert b._fast_fake_quant(x, b.amax, memo) is out_a  # shared
    for other in (c, d):
        out = other._fast_fake_quant(x, other.amax, memo)
        assert out is not out_a
        assert torch.equal(out, other.format.fake_quant(x, other.amax))
    out_b = b._fast_fake_quant(x, b.amax, memo)  # the memo now holds d's output
    assert out_b is not out_a
    assert torch.equal(out_b, out_a)
    assert b._fast_fake_quant(x, b.amax, memo) is out_b
    x.mul_(0.5)  # in place: new version, nothing shared
    out_x = a._fast_fake_quant(x, a.amax, memo)
    assert out_x is not out_b
    assert torch.equal(out_x, a.format.fake_quant(x, a.amax))
    y = x.clone()  # equal values, another tensor: not shared
    assert a._fast_fake_quant(y, a.amax, memo) is not out_x
    with torch.no_grad():
        b.amax.fill_(1.0)  # amax changed in place: b's plan and key follow
    assert torch.equal(b._fast_fake_quant(y, b.amax, memo), c.format.fake_quant(y, c.amax))


def test_cached_linears_on_one_input_share_the_quantized_input():
    from torch import nn

    import modeloptim.torch.quantization as mtq

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(64, 32)
            self.k = nn.Linear(64, 32)
            self.o = nn.Linear(32, 16)

        def forward(self, x):
            return self.o(self.q(x) + self.k(x))

    torch.manual_seed(6)
    model = Two()
    x = torch.randn(5, 64)
    mtq.quantize(model, mtq.FP8_DEFAULT_CFG, lambda m: m(x))
    assert torch.equal(model.q.input_quantizer.amax, model.k.input_quantizer.amax)
    with torch.no_grad():
        ref = model(x)
        with mtq.cache_quantized_weights(model):
            # both layers get the context's one memo (forward takes the fast path on CUDA
            # only: tests/gpu runs the model; here the quantizers' fast path is called)
            memo = model.q.__dict__["_shared_input_memo"]
            assert model.k.__dict__["_shared_input_memo"] is memo
            q_in, k_in = (
                layer.input_quantizer._fast_fake_quant(x, layer.input_quantizer.amax, memo)
                for layer in (model.q, model.k)
            )
            assert k_in is q_in
            assert torch.equal(model(x), ref)
        assert "_shared_input_memo" not in model.q.__dict__
