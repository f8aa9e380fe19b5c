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
