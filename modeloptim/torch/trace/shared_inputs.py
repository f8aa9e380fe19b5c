"""Layers that read the same tensor, found from the fx graphs (one API for every consumer).

``shared_input_groups(model, example_inputs)`` (or ``forward_loop=``) groups the model's
linear-like layers (`LINEAR_LAYOUTS`: ``nn.Linear``, HF ``Conv1D``, quantized subclasses) by
the value they read in the graphs of `recursive_trace` (see `graph_readers`): q/k/v
projections, gate/up, MoE experts reading rows of one tensor, any fan-out through Python
containers and any naming. Each `SharedInputGroup` names the producer of the shared value
(a norm, a linear, any traced module) and whether it is exclusive (foldable: the members are
its only readers). SmoothQuant/AWQ share one input scale per group and fold it into the
producer; export writes one input scale per group.

Graceful degradation: layers the graphs do not reach (inside modules that failed to trace,
opaque leaves) or whose input cannot be resolved are grouped by the runtime finder
(`runtime_readers`), and those groups say so (``source == "runtime"``, ``reason``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modeloptim.torch.trace.api import _contexts, _load_plugins, normalize_example
from modeloptim.torch.trace.graph_readers import (
    ForwardRecord,
    GraphMembership,
    GraphReaders,
    LeafCandidates,
    record_forward,
)
from modeloptim.torch.trace.linear_layouts import in_features, register_hf_conv1d
from modeloptim.torch.trace.runtime_readers import (
    default_predicate,
    find_shared_input_groups,
    merge_layers_read_twice,
    run_one_forward,
)
from modeloptim.torch.trace.shared_group import GroupSource, SharedInputGroup
from modeloptim.torch.trace.symbols import SYM_RULES
from modeloptim.torch.trace.tracer import _short, recursive_trace

__all__ = ["format_shared_input_groups", "shared_input_groups"]

Predicate = Callable[[str, nn.Module], bool]


def shared_input_groups(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    forward_loop: Callable[[nn.Module], Any] | None = None,
    predicate: Predicate | None = None,
) -> list[SharedInputGroup]:
    """Group the model's linear layers by the tensor they read, from its fx graphs.

    Args:
        model: any ``nn.Module`` (not modified; quantized models: call it with quantizers
            disabled if they should not run).
        example_inputs: one forward's input: a tensor, a tuple of positional inputs, a dict
            of keyword inputs, or ``(args, kwargs)``.
        forward_loop: instead of ``example_inputs``: a calibration loop
            ``forward_loop(model)``; the first model call's ``(args, kwargs)`` are captured and
            the loop is stopped after it.
        predicate: which ``(name, module)`` are candidate layers (default: registered linear
            layers, see `LINEAR_LAYOUTS`).

    Returns:
        One `SharedInputGroup` per distinct input value (singletons included), in the order
        the layers first ran; layers that never ran are left out. Groups found in the graphs
        have ``source == "graph"``; the others ``"runtime"`` with the reason in ``reason``.

    Raises:
        TypeError: ``model`` is not a module, or ``predicate``/``forward_loop`` not callable.
        ValueError: not exactly one of ``example_inputs`` / ``forward_loop`` was given, or
            the forward loop never called the model.
    """
    _check_args(model, example_inputs, forward_loop, predicate)
    register_hf_conv1d()
    _load_plugins()
    pred = predicate or default_predicate
    candidates = {id(m): n for n, m in model.named_modules() if pred(n, m)}
    if forward_loop is not None:
        loop = forward_loop
        rec = record_forward(model, lambda m: run_one_forward(m, loop))
    else:
        args, kwargs = normalize_example(example_inputs)
        rec = record_forward(model, lambda m: m(*args, **kwargs))
    if not candidates:
        return []
    args, kwargs = rec.calls[id(model)]
    leaves = LeafCandidates(SYM_RULES, set(candidates))
    readers: GraphReaders | None = None
    try:
        with torch.no_grad(), _contexts(model):
            gc = recursive_trace(model, example_inputs=(args, kwargs), registry=leaves)
            readers = GraphReaders(model, gc, rec, candidates)
            found = readers.membership()
    except Exception as err:  # the graph route failed as a whole: all groups at run time
        readers = None
        ran = [n for mid, n in candidates.items() if mid in rec.calls]
        found = GraphMembership(unresolved=dict.fromkeys(ran, f"tracing failed ({_short(err)})"))
    groups, unknown = _graph_groups(model, readers, rec, found) if readers is not None else ([], [])
    if found.unresolved or unknown:
        names = set(candidates.values())
        runtime = find_shared_input_groups(
            model, lambda m: m(*args, **kwargs), lambda n, _m: n in names
        )
        _exclusive_from_runtime(unknown, runtime)
        groups = _with_runtime(groups, found.unresolved, runtime)
    order = {n: rec.order.get(mid, len(rec.order)) for mid, n in candidates.items()}
    for g in groups:
        idx = sorted(range(len(g.names)), key=lambda i: order[g.names[i]])
        g.names = [g.names[i] for i in idx]
        g.modules = [g.modules[i] for i in idx]
    return sorted(groups, key=lambda g: order[g.names[0]])


def _check_args(model: Any, example_inputs: Any, forward_loop: Any, predicate: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if (example_inputs is None) == (forward_loop is None):
        raise ValueError("example_inputs/forward_loop: expected exactly one of them")
    if forward_loop is not None and not callable(forward_loop):
        raise TypeError("forward_loop: expected a callable forward_loop(model)")
    if predicate is not None and not callable(predicate):
        raise TypeError("predicate: expected a callable predicate(name, module) -> bool")


def _graph_groups(
    model: nn.Module, readers: GraphReaders, rec: ForwardRecord, found: GraphMembership
) -> tuple[list[SharedInputGroup], list[tuple[SharedInputGroup, str]]]:
    """Groups from the graph reads, and ``(group, opaque module)`` of undecided exclusivity."""
    by_value: dict[Any, list[str]] = {}
    reads_of: dict[Any, list[Any]] = {}
    for name, reads in found.reads.items():
        for r in reads:
            members = by_value.setdefault(r.value, [])
            if name not in members:
                members.append(name)
            reads_of.setdefault(r.value, []).append(r)
    modules = dict(model.named_modules())
    out: list[SharedInputGroup] = []
    unknown: list[tuple[SharedInputGroup, str]] = []
    for value, members in merge_layers_read_twice(list(by_value.items())):
        prod = readers.producer(value) if value is not None else None
        prod_mod = modules.get(prod) if prod is not None else None
        excl = readers.exclusive(value, members, reads_of[value]) if value is not None else False
        group = SharedInputGroup(
            names=list(members),
            modules=[modules[n] for n in members],
            producer=prod,
            producer_module=prod_mod,
            exclusive=bool(excl),
            in_features=in_features(modules[members[0]]),
            probe=rec.first_tensor(prod_mod) if prod_mod is not None else None,
            source=GroupSource.GRAPH,
        )
        out.append(group)
        if excl is None:
            opaque = [r.opaque for r in reads_of[value] if r.opaque]
            unknown.append((group, opaque[0] if opaque else "a module that failed to trace"))
    return out, unknown


def _exclusive_from_runtime(
    unknown: list[tuple[SharedInputGroup, str]], runtime: list[SharedInputGroup]
) -> None:
    """Decide exclusivity hidden by untraceable modules with the runtime finder's readers.

    The producer's output also flows into a module that failed to trace; the runtime finder
    sees every op reading it, so its verdict is used when it found the same group.
    """
    by_members = {frozenset(g.names): g for g in runtime}
    for g, opaque in unknown:
        same = by_members.get(frozenset(g.names))
        g.exclusive = same is not None and same.producer == g.producer and same.exclusive
        g.reason = f"exclusivity checked at run time: {opaque} reads the value but failed to trace"


def _with_runtime(
    groups: list[SharedInputGroup], unresolved: dict[str, str], runtime: list[SharedInputGroup]
) -> list[SharedInputGroup]:
    """Replace the graph's view of ``unresolved`` layers by the runtime finder's groups."""
    taken: list[SharedInputGroup] = []
    for g in runtime:
        why = sorted({unresolved[n] for n in g.names if n in unresolved})
        if why:
            g.reason = "; ".join(why)
            taken.append(g)
    gone = {n for g in taken for n in g.names}
    kept: list[SharedInputGroup] = []
    for g in groups:
        idx = [i for i, n in enumerate(g.names) if n not in gone]
        if not idx:
            continue
        if len(idx) < len(g.names):  # other readers were moved to runtime groups
            g.exclusive = False
            g.names = [g.names[i] for i in idx]
            g.modules = [g.modules[i] for i in idx]
        kept.append(g)
    return kept + taken


def format_shared_input_groups(groups: list[SharedInputGroup]) -> str:
    """A plain-text table of ``groups``: members, width, producer, fold, source (and why)."""
    head = ("#", "layers", "in", "producer", "fold", "source")
    rows = [
        (
            str(i),
            ", ".join(g.names),
            str(g.in_features),
            g.producer or "-",
            "yes" if g.foldable else "no",
            g.source.value + (f" ({g.reason})" if g.reason else ""),
        )
        for i, g in enumerate(groups)
    ]
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head) - 1)]
    lines = []
    for r in [head, *rows]:
        cells = [r[c].ljust(widths[c]) for c in range(len(widths))]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
