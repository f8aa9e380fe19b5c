"""Readable dependency report: searchable groups, frozen groups with reasons, failures."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from modeloptim.torch.trace.api import analyze
from modeloptim.torch.trace.result import AnalysisResult, ChannelGroup
from modeloptim.torch.trace.symbols import SymState

_MAX_LAYERS = 6


@dataclass
class TraceReport:
    """What `trace_report` found, printable as text or JSON.

    Attributes:
        model: the model's class name.
        seconds: trace + analysis wall time.
        graphs: number of traced graphs (1 when the whole model traced).
        searchable: searchable groups.
        frozen: frozen groups (with reasons).
        failed: ``(module, message)`` of modules that failed to trace.
        symbols: symbol counts per state.
    """

    model: str
    seconds: float
    graphs: int
    searchable: list[ChannelGroup]
    frozen: list[ChannelGroup]
    failed: list[tuple[str, str]]
    symbols: dict[str, int] = field(default_factory=dict)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "model": self.model,
            "seconds": round(self.seconds, 3),
            "graphs": self.graphs,
            "searchable_groups": [_group_dict(g) for g in self.searchable],
            "frozen_groups": [_group_dict(g) for g in self.frozen],
            "failed_modules": [{"module": m, "message": msg} for m, msg in self.failed],
            "symbols": self.symbols,
            "hparams": self.hparams,
        }

    def to_text(self) -> str:
        """Plain-text tables."""
        lines = [
            f"modeloptim trace: {self.model}: {len(self.searchable)} searchable groups, "
            f"{len(self.frozen)} frozen, {len(self.failed)} modules failed to trace "
            f"({self.graphs} graph(s), {self.seconds:.2f}s)",
            "",
        ]
        lines += _table(
            "Searchable groups",
            ["#", "group", "size", "layers"],
            [[str(i), g.name, str(g.size), _layers(g)] for i, g in enumerate(self.searchable)],
        )
        lines += _table(
            "Frozen groups",
            ["group", "size", "why"],
            [[g.name, str(g.size), "; ".join(_dedup(g.reasons)[:2])] for g in self.frozen],
        )
        if self.failed:
            lines += _table(
                "Modules that failed to trace (leaves; children traced alone)",
                ["module", "message"],
                [[m or "<root>", msg] for m, msg in self.failed],
            )
        if self.hparams:
            lines += _table(
                "Architecture hyperparameters (transformers config names)",
                ["name", "size", "searchable"],
                [
                    [
                        k,
                        str(v["size"]),
                        "yes" if v["searchable"] else "no: " + "; ".join(v["reasons"][:1]),
                    ]
                    for k, v in self.hparams.items()
                ],
            )
        if self.symbols:
            lines.append("Symbols: " + ", ".join(f"{k} {v}" for k, v in self.symbols.items()))
        return "\n".join(lines)


def _group_dict(g: ChannelGroup) -> dict[str, Any]:
    d = g.to_dict()
    d["layers"] = g.layers
    d["reasons"] = _dedup(g.reasons)
    return d


def _dedup(xs: list[str]) -> list[str]:
    out: list[str] = []
    for x in xs:
        if x not in out:
            out.append(x)
    return out


def _layers(g: ChannelGroup) -> str:
    layers = g.layers
    more = f" (+{len(layers) - _MAX_LAYERS} more)" if len(layers) > _MAX_LAYERS else ""
    return ", ".join(layers[:_MAX_LAYERS]) + more


def _table(title: str, header: list[str], rows: list[list[str]], width: int = 100) -> list[str]:
    if not rows:
        return [f"{title}: none", ""]
    cols = len(header)
    widths = [min(max(len(r[c]) for r in [header, *rows]), width) for c in range(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [f"{title}:", fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out.extend(
        fmt.format(*(c if len(c) <= width else c[: width - 3] + "..." for c in r)) for r in rows
    )
    return [*out, ""]


def trace_report(
    model: nn.Module,
    example_input: Any = None,
    *,
    result: AnalysisResult | None = None,
    progress: bool = False,
) -> TraceReport:
    """Analyze ``model`` (or use ``result``) and summarize groups, reasons and failures.

    Args:
        model: the model.
        example_input: one forward's input (see `analyze`); not needed with ``result``.
        result: an existing analysis of ``model``.
        progress: show progress while analyzing.

    Returns:
        The `TraceReport` (``print(report.to_text())`` or ``report.to_dict()``).
    """
    t0 = time.perf_counter()
    if result is None:
        if example_input is None:
            raise ValueError("example_input: required unless result= is given")
        result = analyze(model, example_input, progress=progress)
    seconds = time.perf_counter() - t0
    states: dict[str, int] = {}
    for _, s in result.named_symbols():
        states[s.state.value] = states.get(s.state.value, 0) + 1
    for st in SymState:
        states.setdefault(st.value, 0)
    return TraceReport(
        type(model).__name__,
        seconds,
        len(result.gc),
        result.searchable_groups,
        result.frozen_groups,
        [(n, msg) for n, _, msg in result.gc.named_failed()],
        states,
        _hf_hparams(model, result),
    )


def _hf_hparams(model: nn.Module, result: AnalysisResult) -> dict[str, dict[str, Any]]:
    if "transformers" not in sys.modules or not hasattr(model, "config"):
        return {}
    from modeloptim.torch.trace.plugins.huggingface import hf_search_space

    return {
        k: {
            "size": v.size,
            "searchable": v.searchable,
            "group": v.group.name if v.group else None,
            "reasons": _dedup(v.reasons),
        }
        for k, v in hf_search_space(model, result).items()
    }


def print_trace_report(model: nn.Module, example_input: Any = None, **kwargs: Any) -> TraceReport:
    """`trace_report` and print it; returns the report."""
    rep = trace_report(model, example_input, **kwargs)
    print(rep.to_text())
    return rep
