"""Replaying a compiled Triton kernel without the per-call JIT dispatch.

``kernel[grid](*args, **meta)`` costs 15-25 us of Python per call on the lent H100's host
(binding the arguments, specializing them, hashing a cache key, building launch metadata)
before the C launcher runs; a fake-quantized layer pays it once per quantizer and forward.
:class:`PreparedLaunch` holds a launch whose grid, scalar arguments and constexprs are fixed:
its first two calls go through the normal JIT path, which compiles (or finds) the kernel and
returns the ``CompiledKernel``; later calls hand the same argument tuple straight to that
kernel's launcher, ``CompiledKernel.run(gx, gy, gz, stream, function, packed_metadata,
launch_metadata, enter_hook, exit_hook, *args)`` (the form Triton's own ``JITFunction.run``
uses in Triton 3.4 to 3.9).

The replay is only taken while it launches exactly what the JIT path would launch:

* the same compiled kernel: the JIT path picks a kernel by the arguments' types, constexprs
  and 16-byte alignment of pointers and integers; types, constexprs and integers are fixed
  by the caller, only launches with every tensor 16-byte aligned are bound, and each call
  checks that its tensors are too (otherwise it takes the JIT path, which may compile
  another specialization);
* the same device and no launch hooks (a profiler such as proton registers hooks that the
  JIT path calls): otherwise the JIT path runs;
* a Triton version whose launcher takes that argument form (3.4 <= version < 3.10), and not
  the CPU interpreter: otherwise every call is a plain JIT launch.

The kernel, its arguments and therefore its results are the same either way; tests/gpu
checks bit equality of replayed and JIT launches.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import torch
import triton

from ._common import interpreting

__all__ = ["PreparedLaunch", "launcher_tail", "replay_supported"]

#: Triton versions whose ``CompiledKernel.run`` takes the argument form used here.
_REPLAY_VERSIONS = ((3, 4), (3, 10))


def _version(v: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", v)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@functools.cache
def _version_ok() -> bool:
    lo, hi = _REPLAY_VERSIONS
    if not lo <= _version(triton.__version__) < hi:
        return False
    runtime = getattr(getattr(triton, "knobs", None), "runtime", None)
    return runtime is not None and hasattr(runtime, "launch_enter_hook")


def replay_supported() -> bool:
    """Whether this Triton build can replay compiled kernels (else: plain JIT launches)."""
    return not interpreting() and _version_ok()


def _hooks_idle(runtime: Any) -> bool:
    """True when no launch hook is registered (Triton 3.4+ keeps them in ``HookChain``s)."""
    for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook):
        if hook is None:
            continue
        calls = getattr(hook, "calls", None)
        if calls is None or calls:
            return False
    return True


class PreparedLaunch:
    """One Triton kernel launch with the grid, scalars and constexprs fixed.

    Args:
        kernel: the ``@triton.jit`` function.
        grid: launch grid (1 to 3 ints).
        scalars: the runtime arguments after the tensors, in the kernel's parameter order
            (ints and floats; fixed for every call).
        meta: the constexpr parameters by name plus launch options (``num_warps``...), as
            passed to ``kernel[grid](...)``.

    Calling ``launch(*tensors)`` launches ``kernel[grid](*tensors, *scalars, **meta)``; the
    tensors are the kernel's leading parameters (pointer arguments) in order. The kernel's
    parameters must be: tensors, then ``scalars``, then the constexprs named in ``meta``.
    """

    def __init__(
        self,
        kernel: Any,
        grid: Sequence[int],
        scalars: Sequence[Any],
        meta: dict[str, Any],
    ) -> None:
        if not 1 <= len(grid) <= 3:
            raise ValueError(f"grid: expected 1 to 3 dims, got {tuple(grid)}")
        self._kernel = kernel
        self._grid = tuple(int(g) for g in grid)
        self._scalars = tuple(scalars)
        self._meta = dict(meta)
        self._jit = kernel[self._grid]
        # filled by the second JIT launch when replay is possible (one-shot launches, the
        # format path's, never pay for binding)
        self._replay: tuple[Any, ...] | None = None
        self._try_replay = replay_supported()
        self._launched = False

    @property
    def replaying(self) -> bool:
        """Whether calls now go straight to the compiled kernel's launcher."""
        return self._replay is not None

    def jit_launch(self, *tensors: torch.Tensor) -> Any:
        """Launch through the normal JIT path; returns what ``kernel[grid](...)`` returns."""
        return self._jit(*tensors, *self._scalars, **self._meta)

    def __call__(self, *tensors: torch.Tensor) -> None:
        """Launch the kernel on ``tensors`` (the kernel's leading pointer arguments)."""
        replay = self._replay
        if replay is not None:
            for t in tensors:
                if t.data_ptr() & 15:
                    break  # not the 16-byte aligned specialization that was bound
            else:
                run, g0, g1, g2, function, mid, consts, device, stream, get_device, rt = replay
                if get_device() == device and _hooks_idle(rt):
                    run(g0, g1, g2, stream(device), function, *mid, *tensors, *consts)
                    return
        compiled = self.jit_launch(*tensors)
        if replay is None and self._try_replay:
            if self._launched:
                self._replay = self._bind(compiled, tensors)
                self._try_replay = self._replay is not None
            self._launched = True

    def _bind(self, compiled: Any, tensors: Sequence[torch.Tensor]) -> tuple[Any, ...] | None:
        """The replay tuple for ``compiled`` (None when its layout is not the expected one).

        Only a launch whose tensors are all 16-byte aligned (the usual case: the caching
        allocator aligns to 512 bytes) is bound; each replay checks that this still holds.
        """
        if any(t.data_ptr() & 15 for t in tensors):
            return None
        consts = launcher_tail(self._kernel, len(tensors), self._scalars, self._meta)
        if consts is None:
            return None
        try:
            from triton.runtime import driver

            active = driver.active
            get_device = getattr(torch._C, "_cuda_getDevice", active.get_current_device)
            g = self._grid
            run, mid = _launcher_entry(compiled)
            return (
                run,
                g[0],
                g[1] if len(g) > 1 else 1,
                g[2] if len(g) > 2 else 1,
                compiled.function,
                mid,
                consts,
                active.get_current_device(),
                active.get_current_stream,
                get_device,
                triton.knobs.runtime,
            )
        except (AttributeError, TypeError):  # a Triton whose internals differ: JIT path only
            return None


def _launcher_entry(compiled: Any) -> tuple[Any, tuple[Any, ...]]:
    """The function a replay calls and its arguments between ``function`` and the kernel's.

    Generally ``compiled.run`` (Triton's launcher object) with ``(packed_metadata, launch
    metadata, enter hook, exit hook)``; the metadata and hooks are None because replays only
    run while no hook is registered (the metadata is only read by hooks). On Triton 3.6, for
    a kernel without global or profile scratch memory, the launcher object's ``__call__``
    only adds ``(cooperative grid, PDL, None, None)`` in front of those and calls its C
    ``launch``: that is called directly (a Python frame less per launch).
    """
    launcher = compiled.run
    mid: tuple[Any, ...] = (compiled.packed_metadata, None, None, None)
    if (
        _version(triton.__version__) == (3, 6)
        and getattr(launcher, "global_scratch_size", None) == 0
        and getattr(launcher, "profile_scratch_size", None) == 0
        and not getattr(launcher, "gsan_enabled", False)
        and hasattr(launcher, "launch")
        and hasattr(launcher, "launch_cooperative_grid")
        and hasattr(launcher, "launch_pdl")
    ):
        return launcher.launch, (
            launcher.launch_cooperative_grid,
            launcher.launch_pdl,
            None,  # global scratch
            None,  # profile scratch
            *mid,
        )
    return launcher, mid


def launcher_tail(
    kernel: Any, n_tensors: int, scalars: Sequence[Any], meta: dict[str, Any]
) -> tuple[Any, ...] | None:
    """The arguments after the tensors that the launcher takes: scalars, then constexprs.

    Triton's launcher takes every kernel parameter, constexprs included, in declaration
    order. Returns None unless the kernel's parameters are ``n_tensors`` tensors, then the
    scalars, then constexprs all given in ``meta`` (the layout :class:`PreparedLaunch` needs).
    """
    names = list(getattr(kernel, "arg_names", ()))
    n_run = n_tensors + len(scalars)
    if len(names) < n_run:
        return None
    tail = names[n_run:]
    if any(n in meta for n in names[:n_run]) or any(n not in meta for n in tail):
        return None
    params = getattr(kernel, "params", None)
    if params is not None and any(p.is_constexpr for p in params[:n_run]):
        return None
    return (*scalars, *(meta[n] for n in tail))
