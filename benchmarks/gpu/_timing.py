"""CUDA-graph timing shared by the GPU micro-benchmarks (run them as scripts from this folder)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from triton.testing import do_bench_cudagraph


def graph_us(fn: Callable[[int], Any], copies: int, rep_ms: int = 40) -> float:
    """Microseconds per ``fn(i)`` call, replayed from one CUDA graph over ``i < copies``.

    ``fn(i)`` works on the ``i``-th copy of its operands (copies together larger than L2, so
    every call reads from memory); it is called once before capture (Triton compiles then), and
    the graph replay carries no host launch cost.
    """
    fn(0)
    t = do_bench_cudagraph(lambda: [fn(i) for i in range(copies)], rep=rep_ms)
    return float(t) / copies * 1e3
