"""``PreparedLaunch``: the JIT path under the interpreter, and the replayed argument tuple.

The replay itself needs a GPU (tests/gpu/test_gpu_replay.py checks it bit for bit against the
JIT launch); here the interpreter runs the JIT path, and a recording stand-in for the
compiled kernel's launcher checks the exact arguments a replay passes.
"""

import pytest
import torch

pytest.importorskip("triton")

from modeloptim.torch.quantization.triton import _launch
from modeloptim.torch.quantization.triton import blockwise as bw
from modeloptim.torch.quantization.triton import elementwise as ew
from modeloptim.torch.quantization.triton._launch import PreparedLaunch, launcher_tail

_META = {
    "MODE": 0,
    "FMT": 1,
    "EMIN": -6,
    "MBITS": 3,
    "TINY": 2.0**-24,
    "BF16": False,
    "NATIVE": False,
    "BLOCK_R": 1,
    "BLOCK_L": 64,
    "INT64": False,
}


def test_no_replay_under_the_interpreter():
    assert not _launch.replay_supported()


def test_launcher_tail_is_scalars_then_constexprs_in_declaration_order():
    k = ew._scaled_fake_quant_kernel
    scalars = (1, 128, 1, 448.0, -448.0, 448.0)
    shuffled = dict(reversed(list(_META.items())))  # meta order must not matter
    tail = launcher_tail(k, 3, scalars, {**shuffled, "num_warps": 8})
    names = list(k.arg_names)
    assert tail == (*scalars, *(_META[n] for n in names[9:]))
    # wrong split of tensors / scalars, or a constexpr missing: no replay layout
    assert launcher_tail(k, 2, scalars, _META) is None
    assert launcher_tail(k, 3, scalars, {n: v for n, v in _META.items() if n != "INT64"}) is None


def test_jit_path_equals_the_format_kernel_wrapper():
    torch.manual_seed(0)
    x = torch.randn(4, 64) * 3
    amax = x.abs().amax() * 0.7
    launch = ew.fake_quant_fp8.prepare(x, amax, 4)
    assert launch is not None
    prepared = launch.prepared
    assert isinstance(prepared, PreparedLaunch)
    for _ in range(3):
        assert torch.equal(launch(x), ew.fake_quant_fp8(x, amax, 4))
    assert not prepared.replaying  # interpreter: always the JIT path


def test_replay_passes_grid_stream_and_the_full_argument_tuple():
    calls = []

    def run(*args):
        calls.append(args)

    x = torch.randn(4, 64)
    out = torch.empty_like(x)
    amax = torch.tensor(2.0)
    assert all(t.data_ptr() % 16 == 0 for t in (x, out, amax))
    scalars = (1, 256, 1, 448.0, -448.0, 448.0)
    p = PreparedLaunch(ew._scaled_fake_quant_kernel, (4,), scalars, {**_META, "num_warps": 8})
    tail = launcher_tail(ew._scaled_fake_quant_kernel, 3, scalars, _META)

    class Runtime:
        launch_enter_hook = type("H", (), {"calls": []})()
        launch_exit_hook = None

    mid = ("packed", None, None, None)
    bound = (run, 4, 1, 1, "fn", mid, tail, 0, lambda d: 77, lambda: 0, Runtime)
    p._replay = bound
    p(x, amax, out)
    assert calls == [(4, 1, 1, 77, "fn", "packed", None, None, None, x, amax, out, *tail)]
    # a hook registered (a profiler), another device, or a misaligned tensor: JIT path
    for change in ("hook", "device", "align"):
        jit = []
        p.jit_launch = lambda *t, _j=jit: _j.append(t)  # type: ignore[method-assign]
        replay = list(bound)
        args = (x, amax, out)
        if change == "hook":
            rt = type("R", (), {"launch_enter_hook": type("H", (), {"calls": [print]})()})
            rt.launch_exit_hook = None
            replay[10] = rt
        elif change == "device":
            replay[9] = lambda: 1
        else:
            args = (x.view(-1)[1:], amax, out)  # 4-byte offset
        p._replay = tuple(replay)
        calls.clear()
        p(*args)
        assert calls == [], change
        assert len(jit) == 1, change


def test_dynamic_block_and_mx_prepare_equal_their_wrappers():
    torch.manual_seed(1)
    x = torch.randn(8, 64) * 5
    pairs = [
        (
            bw.fake_quant_int_dynamic_block.prepare(x, 4, False, True),
            bw.fake_quant_int_dynamic_block(x, 4, False, True),
        ),
        (
            bw.fake_quant_fp8_dynamic_block.prepare(x, 4),
            bw.fake_quant_fp8_dynamic_block(x, 4),
        ),
        (
            bw.fake_quant_mx.prepare(x.view(-1, 32), "e2m1"),
            bw.fake_quant_mx(x.view(-1, 32), "e2m1"),
        ),
    ]
    for launch, ref in pairs:
        assert launch is not None
        assert torch.equal(launch(x).reshape(ref.shape), ref)
    assert bw.fake_quant_mx.prepare(x, "e9m9") is None


def test_launcher_entry_calls_the_c_launch_only_for_scratch_free_kernels(monkeypatch):
    class Launcher:
        global_scratch_size = 0
        profile_scratch_size = 0
        launch_cooperative_grid = False
        launch_pdl = True

        def launch(self, *a):
            return a

        def __call__(self, *a):
            return a

    compiled = type("C", (), {"run": Launcher(), "packed_metadata": (4, 1, 0)})()
    monkeypatch.setattr(_launch.triton, "__version__", "3.6.0")
    fn, mid = _launch._launcher_entry(compiled)
    assert fn == compiled.run.launch
    assert mid == (False, True, None, None, (4, 1, 0), None, None, None)
    compiled.run.global_scratch_size = 128  # needs scratch: the launcher object allocates it
    fn, mid = _launch._launcher_entry(compiled)
    assert fn is compiled.run
    assert mid == ((4, 1, 0), None, None, None)
    compiled.run.global_scratch_size = 0
    monkeypatch.setattr(_launch.triton, "__version__", "3.9.0")  # other launchers: run()
    fn, _ = _launch._launcher_entry(compiled)
    assert fn is compiled.run
