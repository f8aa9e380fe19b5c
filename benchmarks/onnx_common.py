"""Shared helpers of the ONNX benchmarks: timing and table printing."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def time_calls(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best-of-``repeat`` wall time of ``fn()`` in seconds (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a table with rich."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in header:
        table.add_column(h)
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


def median_latency(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def cpu_int8_flags() -> list[str]:
    """The x86 flags that decide onnxruntime's int8 GEMM kernel (VNNI, AVX512, AVX2)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in ("avx512_vnni", "avx_vnni", "avx512f", "avx2") if f in flags]


def ort_kernel_counts(path: str) -> dict[str, int]:
    """Op types onnxruntime runs for ``path`` after its graph optimizations (QDQ fusions)."""
    import collections
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = f"{tmp}/optimized.onnx"
        ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        ops = collections.Counter(
            n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node
        )
    return dict(ops)
