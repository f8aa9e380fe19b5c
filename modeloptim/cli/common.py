"""Pieces every subcommand shares: parser setup, argument types, timing and report printing.

Reports print either as JSON (``--json``) or as one table (rich) with note lines under it, so
every command's output looks alike and the printing code exists once.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modeloptim.cli.main import CliError

__all__ = [
    "DEFAULT_MODEL_LABEL",
    "StageTimer",
    "add_command",
    "check_text_file",
    "format_seconds",
    "model_label",
    "positive_int",
    "print_json",
    "print_table",
    "register_delegated",
    "token_forward_loop",
]

#: How reports name the model when ``--model`` is not given.
DEFAULT_MODEL_LABEL = "smollm2 (built-in SmolLM2-135M-Instruct)"


def add_command(
    subparsers: Any, name: str, *, help: str, description: str | None, epilog: str
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` whose help keeps the layout of ``description`` and ``epilog``.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.
        name: the subcommand (``"quantize"``).
        help: one line for the top-level command list.
        description: the subcommand's description (usually its module docstring).
        epilog: examples printed after the arguments.
    """
    return subparsers.add_parser(  # type: ignore[no-any-return]
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def register_delegated(
    subparsers: Any, name: str, module: str, *, help: str, description: str
) -> None:
    """Add subcommand ``name`` run by ``module``'s ``EXAMPLE``, ``add_arguments`` and ``run``.

    For packages that also ship their own ``python -m`` entry point (the ONNX tools): both
    entry points then share one argument set and one ``run``.
    """
    target = importlib.import_module(module)
    parser = add_command(
        subparsers, name, help=help, description=description, epilog=target.EXAMPLE
    )
    target.add_arguments(parser)
    parser.set_defaults(func=target.run)


def positive_int(value: str) -> int:
    """``argparse`` type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def check_text_file(path: Path | None) -> None:
    """Raise `CliError` naming ``--text`` unless ``path`` is ``None`` or an existing file."""
    if path is not None and not path.is_file():
        raise CliError(f"--text: file {str(path)!r} does not exist")


def model_label(model: str | None) -> str:
    """How reports name ``--model`` (the built-in model when it is ``None``)."""
    return model or DEFAULT_MODEL_LABEL


def token_forward_loop(windows: Any) -> Callable[[Any], None]:
    """Calibration loop feeding each row of ``windows`` (``[count, seq_len]`` ids) alone."""
    import torch

    def loop(model: Any) -> None:
        with torch.no_grad():  # calibration only reads activations
            for row in windows:
                model(input_ids=row[None])

    return loop


class StageTimer:
    """Wall time per named stage (seconds, rounded to ms)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block under ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)

    def with_total(self) -> dict[str, float]:
        """Every stage plus ``"total"`` (their sum)."""
        return {**self.seconds, "total": round(sum(self.seconds.values()), 3)}


def format_seconds(seconds: Mapping[str, float]) -> str:
    """``{"load": 1.23, "total": 4.5}`` -> ``"load 1.2, total 4.5"``."""
    return ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())


def print_json(report: Mapping[str, Any]) -> None:
    """Print ``report`` as indented JSON (non-JSON values as ``str``)."""
    print(json.dumps(report, indent=2, default=str))


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    notes: Sequence[str] = (),
) -> None:
    """Print a rich table, then each note on its own line.

    Args:
        title: the table title.
        columns: column headers; every column after the first is right-aligned when there
            are more than two (numbers), the value column of a two-column table is not.
        rows: one sequence of cells per row, ``len(columns)`` cells each.
        notes: lines printed under the table.

    Raises:
        ValueError: a row has the wrong number of cells.
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    justify = "right" if len(columns) > 2 else "left"
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else justify)  # type: ignore[arg-type]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"rows: expected {len(columns)} cells per row, got {list(row)!r}")
        table.add_row(*row)
    console = Console()
    console.print(table)
    for line in notes:
        console.print(line)
