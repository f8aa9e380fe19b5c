"""Graph finder: which linear layers read the same fx value, and which module made it.

Works on the graphs of `recursive_trace` (candidate layers are leaves there, so each call is
one ``call_module`` node):

- the input of a candidate call is *resolved* to the value it reads: through identity
  modules (``nn.Identity``, dropout in eval) and row-only ops
  (``x[idx]``, ``x[:, -1:]``, ``x.view(-1, d)``: rows are selected or regrouped, every row
  keeps its channels) and, for modules traced on their own because their parent failed,
  from a placeholder to the matching argument of the parent's ``call_module`` node (matched
  by tensor identity in one recorded forward);
- the producer of a value is the leaf module it is the output of, or the innermost traced
  module (``nn_module_stack``) that the value leaves;
- the producer is *exclusive* when every user of the value (metadata reads aside) is a
  member layer reading it directly, and the producer ran once.

Candidates the graphs do not reach (inside leaves, inside modules that failed to trace) or
whose input cannot be resolved are reported as ``unresolved`` with the reason.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from modeloptim.torch.trace.shadow import shape_guard
from modeloptim.torch.trace.symbols import SymMapRegistry
from modeloptim.torch.trace.tracer import GraphCollection, call_values

__all__ = ["ForwardRecord", "GraphMembership", "LeafCandidates", "record_forward"]

_META_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "type", "get_device"}
_META_FUNCTIONS: set[Any] = {getattr, shape_guard, len, isinstance}
_VIEW_METHODS = {"view", "reshape", "flatten", "contiguous"}
_VIEW_FUNCTIONS: set[Any] = {torch.reshape, torch.flatten}


@dataclass
class ForwardRecord:
    """What one real forward showed: each module's first call, call counts and call order."""

    calls: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    order: dict[int, int] = field(default_factory=dict)

    def first_tensor(self, module: nn.Module) -> torch.Tensor | None:
        """The first tensor argument of ``module``'s first call (a probe for fold checks)."""
        args, kwargs = self.calls.get(id(module), ((), {}))
        return next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)


@torch.no_grad()
def record_forward(model: nn.Module, run: Callable[[nn.Module], Any]) -> ForwardRecord:
    """Run ``run(model)`` with pre-hooks on every module and return the `ForwardRecord`."""
    rec = ForwardRecord()

    def pre(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        rec.counts[id(m)] = rec.counts.get(id(m), 0) + 1
        if id(m) not in rec.calls:
            rec.calls[id(m)] = (args, dict(kwargs))
            rec.order[id(m)] = len(rec.order)

    handles = [m.register_forward_pre_hook(pre, with_kwargs=True) for m in model.modules()]
    try:
        run(model)
    finally:
        for h in handles:
            h.remove()
    return rec


class LeafCandidates(SymMapRegistry):
    """The tracer's leaf registry plus the candidate layers (one ``call_module`` per call)."""

    def __init__(self, base: SymMapRegistry, leaves: set[int]) -> None:
        super().__init__()
        self._rules = base._rules
        self._leaves = leaves

    def is_registered(self, module: nn.Module) -> bool:
        """Candidates are leaves even when their class overrides forward (quantized layers)."""
        return id(module) in self._leaves or super().is_registered(module)


class _ModelInput:
    """A value that is an input of the model (no producer)."""

    def __init__(self, name: str) -> None:
        self.name = name


@dataclass
class _Read:
    """How one candidate call reads its input."""

    value: fx.Node | _ModelInput | None
    direct: bool  # no row-only op between the value and the call
    reason: str = ""
    opaque: str = ""  # a module that failed to trace the value passed through (if any)


@dataclass
class GraphMembership:
    """Result of the graph search.

    Attributes:
        reads: candidate name -> the resolved values its calls read (in call order).
        unresolved: candidate name -> why its input could not be found in the graphs.
    """

    reads: dict[str, list[_Read]] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)


class GraphReaders:
    """Resolves candidate inputs, producers and exclusivity on a `GraphCollection`."""

    def __init__(
        self, model: nn.Module, gc: GraphCollection, rec: ForwardRecord, candidates: dict[int, str]
    ) -> None:
        self.model = model
        self.gc = gc
        self.rec = rec
        self.candidates = candidates
        self.names = {id(m): n for n, m in model.named_modules()}
        self.by_name = dict(model.named_modules())
        self._root_of: dict[int, nn.Module] = {}
        self._calls: dict[int, list[fx.Node]] = {}
        self._shapes_done: set[int] = set()
        self._inputs: dict[str, _ModelInput] = {}
        for _, root in gc:
            graph = gc[root]
            self._root_of[id(graph)] = root
            for node in graph.nodes:
                if node.op == "call_module":
                    self._calls.setdefault(id(self.module_of(node)), []).append(node)

    # -- structure -------------------------------------------------------------------------
    def module_of(self, node: fx.Node) -> nn.Module:
        """The module a ``call_module`` node calls."""
        root = self._root_of[id(node.graph)]
        return self.gc.graph_module(root).get_submodule(str(node.target))

    def prefix(self, node: fx.Node) -> str:
        """Qualified name of the root of ``node``'s graph, with a trailing dot (or ``""``)."""
        name = self.names[id(self._root_of[id(node.graph)])]
        return name + "." if name else ""

    def _model_input(self, name: str) -> _ModelInput:
        """One value per model argument (readers of the same input form one group)."""
        return self._inputs.setdefault(name, _ModelInput(name))

    def _failed_parent(self, m: nn.Module) -> nn.Module | None:
        name = self.names[id(m)]
        while name:
            name = name.rpartition(".")[0]
            parent = self.by_name[name]
            if not isinstance(parent, nn.ModuleList | nn.ModuleDict):
                return parent
        return None

    # -- membership ------------------------------------------------------------------------
    def membership(self) -> GraphMembership:
        """Resolve the input of every candidate call in every graph."""
        out = GraphMembership()
        for mid, nodes in self._calls.items():
            name = self.candidates.get(mid)
            if name is None:
                continue
            for node in nodes:
                arg = _first_node_arg(node)
                read = (
                    self.resolve(arg, direct=True)
                    if arg is not None
                    else _Read(None, False, "its input is not a traced value")
                )
                if read.value is None:
                    out.unresolved.setdefault(name, read.reason)
                else:
                    out.reads.setdefault(name, []).append(read)
        for mid, name in self.candidates.items():
            if name not in out.reads and name not in out.unresolved and mid in self.rec.calls:
                out.unresolved[name] = self.why_unreached(self.by_name[name])
        for name in out.unresolved:
            out.reads.pop(name, None)
        return out

    def why_unreached(self, m: nn.Module) -> str:
        """Why no graph contains a call of ``m`` (the failed or leaf ancestor)."""
        name = self.names[id(m)]
        while name:
            name = name.rpartition(".")[0]
            anc = self.by_name[name]
            msg = self.gc.failure_msg(anc)
            if msg is not None:
                return f"{name or type(anc).__name__} failed to trace ({msg})"
            if id(anc) in self._calls and anc not in self.gc:
                return f"inside leaf module {name} ({type(anc).__name__})"
        msg = self.gc.failure_msg(self.model)
        return f"the model failed to trace ({msg})" if msg else "not reached by the traced forward"

    def resolve(self, node: fx.Node, direct: bool) -> _Read:
        """The value ``node`` stands for, seeing through row-only ops and placeholders."""
        opaque = ""
        for _ in range(10_000):
            if node.op == "placeholder":
                root = self._root_of[id(node.graph)]
                if root is self.model:
                    return _Read(self._model_input(str(node.target)), direct, opaque=opaque)
                hop = self._through_parent(root, node)
                if isinstance(hop, str):
                    return _Read(None, False, hop)
                if isinstance(hop, _ModelInput):
                    return _Read(hop, False)
                parent = self._failed_parent(root)
                if not opaque and parent is not None:  # the innermost opaque module
                    opaque = self.names[id(parent)]
                node = hop
                continue
            through = self._identity_source(node)
            if through is not None:  # dropout in eval, nn.Identity: the same tensor
                node = through
                continue
            base = self._row_only_base(node)
            if base is None:
                return _Read(node, direct, opaque=opaque)
            node, direct = base, False
        return _Read(None, False, "value chain too long")

    def _through_parent(self, root: nn.Module, ph: fx.Node) -> fx.Node | _ModelInput | str:
        """Map a sub-root's placeholder to the argument of its failed parent's call node."""
        parent = self._failed_parent(root)
        if parent is None:
            return f"{self.names[id(root)]} has no parent graph"
        value = self._runtime_arg(root, str(ph.target))
        if value is None:
            return f"no recorded call of {self.names[id(root)]}"
        pargs, pkwargs = self.rec.calls.get(id(parent), ((), {}))
        why = (
            f"the input of {self.names[id(root)]} is computed inside "
            f"{self.names[id(parent)] or type(parent).__name__}, which failed to trace "
            f"({self.gc.failure_msg(parent)})"
        )
        if parent is self.model:
            hit = [k for k, v in call_values(_bind(parent, pargs, pkwargs)).items() if v is value]
            return self._model_input(hit[0]) if hit else why
        nodes = self._calls.get(id(parent), [])
        if len(nodes) != 1:
            return why if not nodes else f"{self.names[id(parent)]} is called more than once"
        call = nodes[0]
        for i, a in enumerate(pargs):
            node_arg = call.args[i] if i < len(call.args) else None
            if a is value and isinstance(node_arg, fx.Node):
                return node_arg
        for k, v in pkwargs.items():
            arg = call.kwargs.get(k)
            if v is value and isinstance(arg, fx.Node):
                return arg
        return why

    def _runtime_arg(self, m: nn.Module, name: str) -> Any:
        if id(m) not in self.rec.calls:
            return None
        args, kwargs = self.rec.calls[id(m)]
        try:
            return call_values(_bind(m, args, kwargs)).get(name)
        except TypeError:
            return None

    def _identity_source(self, node: fx.Node) -> fx.Node | None:
        """The input of a call of a module that returns its input unchanged (else None)."""
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        m = self.module_of(node)
        identity = isinstance(m, nn.Identity) or (
            isinstance(m, nn.modules.dropout._DropoutNd) and not m.training
        )
        return node.args[0] if identity else None

    def _readers(self, value: fx.Node) -> list[fx.Node]:
        """Users of ``value``, looking through identity modules (metadata reads dropped)."""
        out: list[fx.Node] = []
        for u in value.users:
            if _is_meta(u):
                continue
            if self._identity_source(u) is value:
                out.extend(self._readers(u))
            else:
                out.append(u)
        return out

    # -- row-only ops ----------------------------------------------------------------------
    def _row_only_base(self, node: fx.Node) -> fx.Node | None:
        """The source of ``node`` when ``node`` only selects/regroups rows of it."""
        is_getitem = node.op == "call_function" and node.target is operator.getitem
        is_view = (node.op == "call_method" and node.target in _VIEW_METHODS) or (
            node.op == "call_function" and node.target in _VIEW_FUNCTIONS
        )
        if not (is_getitem or is_view) or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        base = node.args[0]
        if _shape(base) is None or _shape(node) is None:  # the trace's shadow run missed one
            self._propagate_shapes(node)
        bshape, oshape = _shape(base), _shape(node)
        if bshape is None or oshape is None or not bshape or not oshape:
            return None
        if bshape[-1] != oshape[-1]:
            return None
        if is_getitem and not _last_dim_untouched(node.args[1], len(bshape)):
            return None
        return base

    def _propagate_shapes(self, node: fx.Node) -> None:
        """Annotate ``node``'s graph with tensor shapes (one interpreted run, once per graph)."""
        root = self._root_of[id(node.graph)]
        if id(root) in self._shapes_done:
            return
        self._shapes_done.add(id(root))
        gm = self.gc.graph_module(root)
        args, kwargs = self.rec.calls.get(id(root), ((), {}))
        try:
            values = call_values(_bind(root, args, kwargs))
            inputs = [values[str(p.target)] for p in gm.graph.nodes if p.op == "placeholder"]
            with torch.no_grad():
                _ShapeRecorder(gm).run(*inputs)
        except Exception:  # no shapes: row-only ops are not seen through
            return

    # -- producer / exclusivity ------------------------------------------------------------
    def producer(self, value: fx.Node | _ModelInput) -> str | None:
        """Qualified name of the module whose output ``value`` is (``None``: none/unknown)."""
        if isinstance(value, _ModelInput):
            return None
        if value.op == "call_module":
            return self.names[id(self.module_of(value))]
        stack = _stack(value)
        users = self._readers(value)
        for path in reversed(stack):
            if any(u.op == "output" or path not in _stack(u) for u in users):
                return self.prefix(value) + path
        return None

    def exclusive(
        self, value: fx.Node | _ModelInput, members: list[str], reads: list[_Read]
    ) -> bool | None:
        """Only the members read ``value`` (each directly) and its producer ran once.

        Returns:
            True/False, or None when the only other readers are modules that failed to trace
            (what they do with the value is not in any graph).
        """
        if isinstance(value, _ModelInput) or not all(r.direct for r in reads):
            return False
        prod = self.producer(value)
        if prod is None or prod in members or self.rec.counts.get(id(self.by_name[prod])) != 1:
            return False
        opaque = False
        for u in self._readers(value):
            if u.op == "call_module":
                mod = self.module_of(u)
                if self.names[id(mod)] in members:
                    continue
                if self.gc.is_failed(mod):
                    opaque = True
                    continue
            return False
        return None if opaque else True


class _ShapeRecorder(fx.Interpreter):
    """Runs a graph and stores each tensor node's shape in ``node.meta["mo_shape"]``."""

    def run_node(self, n: fx.Node) -> Any:
        """Run ``n`` and record its shape."""
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            n.meta["mo_shape"] = tuple(out.shape)
        return out


def _bind(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
    bound = inspect.signature(m.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound


def _first_node_arg(node: fx.Node) -> fx.Node | None:
    for a in (*node.args, *node.kwargs.values()):
        if isinstance(a, fx.Node):
            return a
    return None


def _stack(node: fx.Node) -> list[str]:
    """Module paths (relative to the graph's root) ``node`` ran in, outermost first."""
    stack = node.meta.get("nn_module_stack") or {}
    return [v[0] if isinstance(v, tuple) else str(v) for v in stack.values()]


def _is_meta(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _META_METHODS
    return node.op == "call_function" and node.target in _META_FUNCTIONS


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    shape = node.meta.get("mo_shape")
    return tuple(shape) if shape is not None else None


def _last_dim_untouched(idx: Any, ndim: int) -> bool:
    """Whether indexing with ``idx`` leaves the last dim alone (or slices it whole)."""
    items = idx if isinstance(idx, tuple) else (idx,)
    if any(i is None for i in items):
        return False  # new axes shift dims: not worth following
    if any(i is Ellipsis for i in items):
        after = items[items.index(Ellipsis) + 1 :]
        return not after or isinstance(after[-1], slice)
    if len(items) < ndim:
        return True
    return len(items) == ndim and isinstance(items[-1], slice)
