import sys

import torch

from modeloptim.torch.quantization.kernel_registry import CUDA_KERNELS, KernelRegistry


def test_register_get_and_missing_package_is_not_an_error():
    reg = KernelRegistry(package="modeloptim_no_such_kernel_package")
    assert reg.get("int") is None

    @reg.register("int")
    def k(x, amax, num_bits, unsigned, narrow_range):
        return x

    assert reg.get("int") is k
    assert reg.names() == ["int"]
    reg.unregister("int")
    assert reg.get("int") is None


def test_lazy_import_registers_kernels(tmp_path, monkeypatch):
    pkg = tmp_path / "fakekernels_mo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from modeloptim.torch.quantization import kernel_registry as kr\n"
        "REG = kr._TEST_REG\n"
        "@REG.register('fp8')\n"
        "def fp8(x, amax, exponent_bits):\n"
        "    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import modeloptim.torch.quantization.kernel_registry as kr

    reg = KernelRegistry(package="fakekernels_mo")
    monkeypatch.setattr(kr, "_TEST_REG", reg, raising=False)
    assert "fakekernels_mo" not in sys.modules
    assert reg.get("fp8") is not None  # first get imported the package
    assert "fakekernels_mo" in sys.modules


def test_cpu_tensors_never_call_kernels(monkeypatch):
    from modeloptim.torch.quantization.formats import IntegerFormat

    calls = []
    monkeypatch.setattr(CUDA_KERNELS, "_loaded", True)
    monkeypatch.setitem(CUDA_KERNELS._kernels, "int", lambda *a: calls.append(a))
    IntegerFormat(8).fake_quant(torch.randn(4), torch.tensor(1.0))
    assert calls == []


def test_cuda_dispatch_uses_kernel_and_falls_back_on_none(monkeypatch):
    # Pretend the view is on CUDA to exercise the dispatch contract on CPU.
    from modeloptim.torch.quantization.formats import Blocked, IntegerFormat, MXFormat, NVFP4Format

    monkeypatch.setattr(CUDA_KERNELS, "_loaded", True)
    seen = {}

    def make(name, result):
        def fn(*args):
            seen[name] = args
            return result(args) if callable(result) else result

        return fn

    monkeypatch.setitem(CUDA_KERNELS._kernels, "int", make("int", lambda a: a[0] * 0 + 7))
    monkeypatch.setitem(CUDA_KERNELS._kernels, "int_dynamic_block", make("idb", None))
    monkeypatch.setitem(CUDA_KERNELS._kernels, "nvfp4", make("nvfp4", lambda a: a[0] * 0))
    monkeypatch.setitem(CUDA_KERNELS._kernels, "mx", make("mx", None))
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    x = torch.randn(4, 64)
    assert torch.equal(IntegerFormat(8).fake_quant(x, torch.tensor(1.0)), torch.full((4, 64), 7.0))
    assert seen["int"][2:] == (8, False, True)
    dyn = IntegerFormat(4, granularity=Blocked({-1: 16}, dynamic=True))
    ref_in = dyn.granularity.to_view(x)[0]
    out = dyn.fake_quant(x)  # kernel returned None -> torch path
    assert seen["idb"][0].shape == (16, 16)
    assert torch.equal(seen["idb"][0], ref_in)
    assert out.shape == x.shape
    assert not torch.equal(out, torch.zeros_like(x))
    assert torch.equal(NVFP4Format().fake_quant(x, torch.tensor(3.0)), torch.zeros_like(x))
    assert seen["nvfp4"][0].shape == (16, 16)
    assert seen["nvfp4"][1].ndim == 0
    MXFormat("e2m1").fake_quant(x)
    assert seen["mx"][0].shape == (8, 32)
    assert seen["mx"][1] == "e2m1"


def test_ste_backward_kernel_used_only_without_amax_grad(monkeypatch):
    from modeloptim.torch.quantization.formats import IntegerFormat
    from modeloptim.torch.quantization.tensor_quant import fake_quant_ste

    monkeypatch.setattr(CUDA_KERNELS, "_loaded", True)
    for name in ("int", "fp8"):
        monkeypatch.setitem(CUDA_KERNELS._kernels, name, lambda *a: None)
    calls = []

    def ste(x, g, amax):
        calls.append(amax.shape)
        return torch.full_like(g, 5.0)

    monkeypatch.setitem(CUDA_KERNELS._kernels, "ste_backward", ste)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    x = torch.randn(4, 8, requires_grad=True)
    fake_quant_ste(x, torch.tensor(1.0), IntegerFormat(8)).sum().backward()
    assert torch.equal(x.grad, torch.full((4, 8), 5.0))
    assert calls == [torch.Size([])]
    x.grad = None
    amax = torch.tensor(1.0, requires_grad=True)
    fake_quant_ste(x, amax, IntegerFormat(8)).sum().backward()
    assert len(calls) == 1  # learnable amax: torch path computes both gradients
    assert torch.equal(x.grad, (x.detach().abs() <= 1).float())
