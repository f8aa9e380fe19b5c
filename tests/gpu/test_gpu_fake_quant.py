"""Each Triton fake-quant kernel vs the PyTorch reference on the GPU, bit-exact, random data.

Run on a CUDA machine: ``python -m pytest -q tests/gpu``. Skipped without CUDA.
"""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

if torch.cuda.is_available():
    from modeloptim.torch.quantization.triton import _common
    from modeloptim.torch.quantization.triton import blockwise as bw
    from modeloptim.torch.quantization.triton import elementwise as ew
    from modeloptim.torch.quantization.triton import reference as ref

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.fixture(params=[True, False], ids=["native_fp8", "grid_fp8"])
def native(request, monkeypatch):
    monkeypatch.setattr(_common, "USE_NATIVE_FP8", request.param)
    return request.param


def _data(shape, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(shape, device="cuda", generator=g) * 3
    x.view(-1)[::97] *= 50
    x.view(-1)[7::1013] = 0.0
    return x.to(dtype)


def _same(a, b):
    assert a is not None
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    a, b = a.nan_to_num(), b.nan_to_num()
    bad = (a != b).sum().item()
    assert bad == 0, f"{bad} of {a.numel()} differ; max {(a.float() - b.float()).abs().max()}"


SHAPES = [(1024, 4096), (3, 5, 777), (257, 130)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_int_and_fp8(dtype, shape, native):
    x = _data(shape, dtype, seed=hash((shape, str(dtype))) % 1000)
    xf = x.float().abs()
    amaxes = [xf.amax() * 0.5, xf.amax(dim=-1, keepdim=True) * 0.7]
    amaxes.append(xf.amax(dim=tuple(range(x.dim() - 1)), keepdim=True) * 0.8)
    if x.dim() == 3:
        amaxes.append(xf.amax(dim=(0, 2), keepdim=True) * 0.6)
    for amax in amaxes:
        for nb, uns, narrow in [(8, False, True), (4, False, False), (8, True, True)]:
            xx = x.abs() if uns else x
            _same(
                ew.fake_quant_int(xx, amax, nb, uns, narrow),
                ref.fake_quant_int(xx, amax, nb, uns, narrow),
            )
        for eb in (4, 5):
            _same(ew.fake_quant_fp8(x, amax, eb), ref.fake_quant_fp8(x, amax, eb))
        g = torch.randn_like(x)
        _same(ew.ste_backward(x, g, amax), ref.ste_backward(x, g, amax))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dynamic_blocks(dtype, native):
    x = _data((4096, 256), dtype, seed=1)
    for block in (128, 32, 24):
        xb = x.reshape(-1, block) if x.numel() % block == 0 else x[:, :block].contiguous()
        for nb, uns, narrow in [(4, False, True), (8, False, True), (4, True, True)]:
            xx = xb.abs() if uns else xb
            _same(
                bw.fake_quant_int_dynamic_block(xx, nb, uns, narrow),
                ref.fake_quant_int_dynamic_block(xx, nb, uns, narrow),
            )
        for eb in (4, 5):
            _same(bw.fake_quant_fp8_dynamic_block(xb, eb), ref.fake_quant_fp8_dynamic_block(xb, eb))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nvfp4_and_mx(dtype, native):
    x = _data((2048, 512), dtype, seed=2)
    x = x * torch.logspace(-4, 4, 2048, device="cuda")[:, None].to(dtype)
    x16 = x.reshape(-1, 16)
    for ga in (x.float().abs().amax(), torch.tensor(0.37, device="cuda")):
        _same(bw.fake_quant_nvfp4(x16, ga), ref.fake_quant_nvfp4(x16, ga))
    x32 = x.reshape(-1, 32)
    for elem in ("e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"):
        _same(bw.fake_quant_mx(x32, elem), ref.fake_quant_mx(x32, elem))


def test_gpu_reference_equals_cpu_reference():
    # the pinned numerics give the same bits on both devices (no reciprocal shortcuts)
    x = _data((512, 256), torch.float32, seed=3)
    amax = x.abs().amax(dim=1, keepdim=True) * 0.9
    c = x.cpu()
    _same(
        ref.fake_quant_int(x, amax, 8, False, True).cpu(),
        ref.fake_quant_int(c, amax.cpu(), 8, False, True),
    )
    _same(ref.fake_quant_fp8(x, amax, 4).cpu(), ref.fake_quant_fp8(c, amax.cpu(), 4))
    ga = x.abs().amax()
    _same(
        ref.fake_quant_nvfp4(x.reshape(-1, 16), ga).cpu(),
        ref.fake_quant_nvfp4(c.reshape(-1, 16), ga.cpu()),
    )
    _same(
        ref.fake_quant_mx(x.reshape(-1, 32), "e2m1").cpu(),
        ref.fake_quant_mx(c.reshape(-1, 32), "e2m1"),
    )


def test_large_tensor_every_element_written():
    # 16384 x 8192 (the benchmark size): poison the output buffer first
    x = _data((16384, 8192), torch.bfloat16, seed=4)
    amax = x.float().abs().amax()
    torch.cuda.empty_cache()
    out = ew.fake_quant_fp8(x, amax, 4)
    _same(out, ref.fake_quant_fp8(x, amax, 4))
    out = bw.fake_quant_nvfp4(x.view(-1, 16), amax)
    _same(out, ref.fake_quant_nvfp4(x.view(-1, 16), amax))


def test_registry_integration_if_present():
    kr = pytest.importorskip("modeloptim.torch.quantization.kernel_registry")
    for name in ("int", "fp8", "int_dynamic_block", "fp8_dynamic_block", "nvfp4", "mx"):
        assert kr.get(name) is not None, name
