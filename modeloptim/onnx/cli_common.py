"""Shared argument handling for the ``onnx-quantize`` and ``onnx-autocast`` commands."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def split_list(value: str | None) -> list[str] | None:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; ``None``/empty -> ``None``."""
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def print_report(title: str, rows: Mapping[str, Any], as_json: bool, details: Any = None) -> None:
    """Print a two-column table (rich) or JSON of ``rows`` (+ ``details`` in JSON)."""
    if as_json:
        payload = dict(rows)
        if details is not None:
            payload["details"] = details
        print(json.dumps(payload, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("item")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(key, str(value))
    Console().print(table)
