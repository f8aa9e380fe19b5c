"""Core's formats on CUDA tensors call the Triton kernels through the registry, bit-exactly.

Each format's ``fake_quant`` on a CUDA tensor runs once with the registered kernels and once
with the registry lookups disabled (pure PyTorch on the GPU), and once on the CPU: all three
must agree bit for bit, and the kernel must actually have been called.
"""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

kr = pytest.importorskip("modeloptim.torch.quantization.kernel_registry")
resolve = pytest.importorskip("modeloptim.torch.quantization.formats.resolve")
config = pytest.importorskip("modeloptim.torch.quantization.config")

CFGS = [
    {"num_bits": 8},
    {"num_bits": 8, "axis": 0},
    {"num_bits": 4, "axis": -1, "narrow_range": False},
    {"num_bits": (4, 3)},
    {"num_bits": (4, 3), "axis": 0},
    {"num_bits": (5, 2)},
    {"num_bits": 4, "block_sizes": {-1: 128, "type": "dynamic"}},
    {"num_bits": (4, 3), "block_sizes": {-1: 128, "type": "dynamic"}},
    {"num_bits": "nvfp4"},
    {"num_bits": "mxfp8"},
    {"num_bits": "mxfp6"},
    {"num_bits": "mxfp4"},
    {"num_bits": "mxint8"},
]


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: str(c).replace(" ", ""))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_format_uses_kernel_bit_exact(cfg, dtype, monkeypatch):
    fmt = resolve.resolve_format(config.QuantizerAttributeConfig(**cfg))
    x = (torch.randn(256, 512, device="cuda") * 4).to(dtype)
    amax = None
    g = fmt.amax_granularity
    if g is not None:
        amax = g.reduce_amax(g.to_view(x)[0]).float()
    calls = []
    real_get = kr.CUDA_KERNELS.get

    def spy(name):
        fn = real_get(name)
        if fn is None:
            return None

        def wrapped(*args):
            out = fn(*args)
            calls.append((name, out is not None))
            return out

        return wrapped

    monkeypatch.setattr(kr.CUDA_KERNELS, "get", spy)
    with_kernel = fmt.fake_quant(x, amax)
    assert any(ok for _, ok in calls), f"no kernel ran for {cfg}: {calls}"
    monkeypatch.setattr(kr.CUDA_KERNELS, "get", lambda name: None)
    torch_gpu = fmt.fake_quant(x, amax)
    cpu = fmt.fake_quant(x.cpu(), None if amax is None else amax.cpu())
    assert torch.equal(with_kernel, torch_gpu)
    assert torch.equal(with_kernel.cpu(), cpu)
