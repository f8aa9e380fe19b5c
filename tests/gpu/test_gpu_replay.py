"""Replayed Triton launches (``PreparedLaunch``) equal the JIT launches bit for bit.

Each prepared fake-quant kernel runs through Triton's JIT path and through the replayed
compiled kernel on fresh random data (poisoned outputs), and the quantizer's CUDA fast path
(plan + replay, dynamic block formats included, the cached ``pre_quant_scale``) equals the
format's PyTorch path on the same GPU.
"""

import copy

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

triton = pytest.importorskip("triton")

from modeloptim.torch.quantization.kernel_registry import CUDA_KERNELS  # noqa: E402
from modeloptim.torch.quantization.nn.modules.tensor_quantizer import (  # noqa: E402
    TensorQuantizer,
)
from modeloptim.torch.quantization.triton import _launch  # noqa: E402
from modeloptim.torch.quantization.triton import blockwise as bw  # noqa: E402
from modeloptim.torch.quantization.triton import elementwise as ew  # noqa: E402


def _prepared_cases(x):
    """name -> (prepared launch, its input shape, the one-shot JIT wrapper on an input)."""
    row = x.float().abs().amax(dim=-1, keepdim=True).reshape(-1, 1) * 0.7
    one = x.float().abs().amax() * 0.8
    x2 = x.reshape(-1, x.shape[-1])
    s16, s32, s128 = x.reshape(-1, 16), x.reshape(-1, 32), x.reshape(-1, 128)
    return {
        "int8 per-row": (
            ew.fake_quant_int.prepare(x2, row, 8, False, True),
            x2.shape,
            lambda v: ew.fake_quant_int(v, row, 8, False, True),
        ),
        "fp8 per-tensor": (
            ew.fake_quant_fp8.prepare(x, one, 4),
            x.shape,
            lambda v: ew.fake_quant_fp8(v, one, 4),
        ),
        "nvfp4": (
            bw.fake_quant_nvfp4.prepare(s16, one),
            s16.shape,
            lambda v: bw.fake_quant_nvfp4(v, one),
        ),
        "int4 dyn block": (
            bw.fake_quant_int_dynamic_block.prepare(s128, 4, False, True),
            s128.shape,
            lambda v: bw.fake_quant_int_dynamic_block(v, 4, False, True),
        ),
        "fp8 dyn block": (
            bw.fake_quant_fp8_dynamic_block.prepare(s128, 4),
            s128.shape,
            lambda v: bw.fake_quant_fp8_dynamic_block(v, 4),
        ),
        "mxfp4": (
            bw.fake_quant_mx.prepare(s32, "e2m1"),
            s32.shape,
            lambda v: bw.fake_quant_mx(v, "e2m1"),
        ),
    }


def _bits(t):
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int16)


@pytest.mark.skipif(not _launch.replay_supported(), reason="Triton version without replay")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_replayed_launch_equals_jit_launch(dtype):
    torch.manual_seed(0)
    x = (torch.randn(8, 64, 256, device="cuda") * 3).to(dtype)
    for name, (launch, shape, jit_once) in _prepared_cases(x).items():
        assert launch is not None, name
        xin = x.reshape(shape)
        launch(xin)
        launch(xin)  # the second JIT launch binds the replay
        assert launch.prepared.replaying, name
        if _launch._version(triton.__version__) == (3, 6):  # the C launch is called directly
            assert not hasattr(launch.prepared._replay[0], "global_scratch_size"), name
        for _ in range(3):
            xn = (torch.randn(shape, device="cuda") * 5).to(dtype)
            replayed = launch(xn)
            jit = jit_once(xn)  # a fresh PreparedLaunch: JIT path only
            assert not torch.isnan(replayed).any(), name  # inputs are finite: all written
            assert torch.equal(_bits(replayed), _bits(jit)), name


@pytest.mark.skipif(not _launch.replay_supported(), reason="Triton version without replay")
def test_misaligned_input_takes_the_jit_path_and_stays_exact():
    torch.manual_seed(1)
    x = torch.randn(4097 * 64, device="cuda", dtype=torch.bfloat16)
    amax = x.float().abs().amax() * 0.5
    a = x[: 4096 * 64]
    b = x[1 : 4096 * 64 + 1]  # 2-byte offset: not 16-byte aligned
    launch = ew.fake_quant_fp8.prepare(a, amax, 4)
    for _ in range(3):
        launch(a)
    assert launch.prepared.replaying
    ref = CUDA_KERNELS.get("fp8")(b.contiguous(), amax, 4)
    assert torch.equal(launch(b), ref)


CFGS = [
    {"num_bits": (4, 3), "axis": None},
    {"num_bits": 8, "axis": None},
    {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}},
    {"num_bits": 4, "block_sizes": {-1: 128, "type": "dynamic"}},
    {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
]


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: str(c).replace(" ", ""))
def test_quantizer_fast_path_equals_format_path(cfg):
    torch.manual_seed(2)
    x = torch.randn(4, 128, 512, device="cuda", dtype=torch.bfloat16) * 2
    q = TensorQuantizer(cfg)
    amax = q.format.compute_amax(x)
    if amax is not None:
        q.amax = amax * 0.9
    q.to("cuda")
    with torch.no_grad():
        for _ in range(4):  # plan, JIT, bind, replay
            xn = torch.randn_like(x) * 3
            out = q(xn)
            assert q._fast_plan[1] is not None
            assert torch.equal(out, q.format.fake_quant(xn, q.amax))


def test_cached_pre_quant_scale_equals_the_uncached_product():
    torch.manual_seed(3)
    x = torch.randn(6, 256, device="cuda", dtype=torch.bfloat16)
    q = TensorQuantizer({"num_bits": (4, 3), "axis": None}, amax=4.0).to("cuda")
    q.pre_quant_scale = torch.rand(256, device="cuda") + 0.5
    with torch.no_grad():
        first = q(x)
        ref = q.format.fake_quant(x * q.pre_quant_scale.to(torch.bfloat16), q.amax)
        assert torch.equal(first, ref)
        q.pre_quant_scale.mul_(2.0)  # in place: the cached copy must follow
        ref2 = q.format.fake_quant(x * q.pre_quant_scale.to(torch.bfloat16), q.amax)
        assert torch.equal(q(x), ref2)


def test_cached_model_shares_the_quantized_input_of_sibling_linears(monkeypatch):
    from torch import nn

    import modeloptim.torch.quantization as mtq

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(256, 256) for _ in range(3))
            self.o = nn.Linear(256, 256)

        def forward(self, x):
            return self.o(self.q(x) * self.k(x) + self.v(x))

    torch.manual_seed(7)
    model = Block().cuda().to(torch.bfloat16)
    x = torch.randn(4, 32, 256, device="cuda", dtype=torch.bfloat16)
    launches = []
    real = _launch.PreparedLaunch.__call__
    monkeypatch.setattr(
        _launch.PreparedLaunch, "__call__", lambda s, *t: launches.append(1) or real(s, *t)
    )
    for cfg in (mtq.FP8_DEFAULT_CFG, mtq.NVFP4_DEFAULT_CFG):
        m = copy.deepcopy(model)
        mtq.quantize(m, cfg, lambda mm: mm(x))
        with torch.no_grad():
            ref = m(x)  # no cache, no memo
            with mtq.cache_quantized_weights(m):
                m(x)  # quantizes and caches the weights
                for _ in range(3):
                    launches.clear()
                    out = m(x)
                    assert torch.equal(out, ref)
                    assert len(launches) == 2  # q/k/v share one input launch, o its own
