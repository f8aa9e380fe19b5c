"""Robust torch.fx tracing: modules that fail become leaves and are traced on their own."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import fx, nn

from modeloptim.torch.trace.shadow import ShadowMixin
from modeloptim.torch.trace.symbols import SYM_RULES, SymMapRegistry

LeafRule = Callable[[nn.Module], bool]
_LEAF_RULES: list[LeafRule] = []
_TRACE_FORWARDS: dict[type[nn.Module], Callable[..., Any]] = {}


def register_leaf(rule: LeafRule) -> LeafRule:
    """Register a predicate marking modules the tracer must not trace into (plugins)."""
    _LEAF_RULES.append(rule)
    return rule


def register_trace_forward(*types: type[nn.Module]) -> Callable[[Callable[..., Any]], Any]:
    """Register a traceable replacement of ``forward`` for ``types`` (same signature).

    Used by plugins for modules whose real forward builds caches or masks that torch.fx
    cannot follow; the replacement must compute the same tensors.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for t in types:
            _TRACE_FORWARDS[t] = fn
        return fn

    return deco


class _RetraceError(Exception):
    """A submodule failed; trace again with it as a leaf."""


def _short(err: BaseException) -> str:
    msg = f"{type(err).__name__}: {err}".strip().splitlines()
    first = msg[0] if msg else type(err).__name__
    frames = traceback.extract_tb(err.__traceback__)
    where = next((f for f in reversed(frames) if "torch/fx" not in f.filename), None)
    return (
        f"{first[:300]} (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
        if where
        else first[:300]
    )


class RobustTracer(ShadowMixin, fx.Tracer):
    """An fx tracer that records failing submodules instead of giving up.

    Leaves: modules with a registered `SymInfo` rule, plugin leaf rules, torch.nn built-ins
    (activations, pooling, ...), and modules that failed to trace.

    Args:
        registry: rules whose module types are leaves (default: global registry).
        failed: ``{module: message}`` of modules known to fail (updated while tracing).
        example: example values of the root's arguments by name (enables shadow execution
            of shape-only Python logic, see `shadow`).
    """

    def __init__(
        self,
        registry: SymMapRegistry | None = None,
        failed: dict[nn.Module, str] | None = None,
        example: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(param_shapes_constant=False)
        self.proxy_buffer_attributes = True  # buffers as graph nodes, not baked constants
        self.init_shadow(example)
        self.registry = registry or SYM_RULES
        self.failed: dict[nn.Module, str] = failed if failed is not None else {}
        self.visited: set[int] = set()
        self.leaves: set[int] = set()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """Whether ``m`` is kept as one ``call_module`` node."""
        if m in self.failed or self.registry.is_registered(m):
            return True
        if any(rule(m) for rule in _LEAF_RULES):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Trace into ``m``; on failure remember it and ask for a re-trace."""
        self.visited.add(id(m))
        qualname = self.path_of_module(m)
        if self.is_leaf_module(m, qualname):
            self.leaves.add(id(m))
            return super().call_module(m, forward, args, kwargs)
        override = _TRACE_FORWARDS.get(type(m))
        if override is not None:

            def forward(*a: Any, **k: Any) -> Any:
                return override(m, *a, **k)

        try:
            return super().call_module(m, forward, args, kwargs)
        except _RetraceError:
            raise
        except Exception as err:
            self.failed[m] = _short(err)
            raise _RetraceError from err


class GraphCollection:
    """fx graphs of a model: one per traced (sub)root, plus failure records.

    ``gc[module]`` is the module's fx.Graph; iteration yields ``(name, module)`` of traced
    roots in trace order.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._graphs: dict[int, fx.Graph] = {}
        self._gms: dict[int, fx.GraphModule] = {}
        self._concrete: dict[int, dict[str, Any]] = {}
        self._names: dict[int, str] = {id(m): n for n, m in model.named_modules()}
        self._modules: dict[int, nn.Module] = {id(m): m for m in model.modules()}
        self._roots: list[int] = []
        self._failed: dict[int, str] = {}
        self._visited: set[int] = set()
        self.calls: dict[int, inspect.BoundArguments] = {}
        self._leaf_roots: set[int] = set()

    def _add(self, m: nn.Module, gm: fx.GraphModule, concrete: dict[str, Any]) -> None:
        self._graphs[id(m)] = gm.graph
        self._gms[id(m)] = gm
        self._concrete[id(m)] = concrete
        self._roots.append(id(m))

    def __getitem__(self, m: nn.Module) -> fx.Graph:
        return self._graphs[id(m)]

    def __contains__(self, m: object) -> bool:
        return id(m) in self._graphs

    def __iter__(self) -> Iterator[tuple[str, nn.Module]]:
        for k in self._roots:
            yield self._names[k], self._modules[k]

    def __len__(self) -> int:
        return len(self._roots)

    def graph_module(self, m: nn.Module) -> fx.GraphModule:
        """The fx.GraphModule traced for ``m``."""
        return self._gms[id(m)]

    def is_leaf_root(self, m: nn.Module) -> bool:
        """Whether ``m``'s graph is a single call of the (leaf) module itself."""
        return id(m) in self._leaf_roots

    def concrete_args(self, m: nn.Module) -> dict[str, Any]:
        """The concrete arguments ``m`` was traced with."""
        return self._concrete[id(m)]

    def is_failed(self, m: nn.Module) -> bool:
        """Whether tracing ``m``'s forward failed (it is a leaf in its parent's graph)."""
        return id(m) in self._failed

    def failure_msg(self, m: nn.Module) -> str | None:
        """Why ``m`` failed to trace (``None`` if it did not fail)."""
        return self._failed.get(id(m))

    def is_unvisited(self, m: nn.Module) -> bool:
        """Whether no traced forward called ``m`` (e.g. unused modules)."""
        return id(m) not in self._visited

    def named_failed(self) -> Iterator[tuple[str, nn.Module, str]]:
        """Iterate ``(name, module, message)`` of modules that failed to trace."""
        for k, msg in self._failed.items():
            yield self._names.get(k, "?"), self._modules[k], msg

    def name_of(self, m: nn.Module) -> str:
        """Qualified name of ``m`` in the model (``""`` for the root)."""
        return self._names[id(m)]


def root_params(m: nn.Module, bound: inspect.BoundArguments | None) -> list[str]:
    """Names the traced root function takes.

    These are the forward's named parameters plus the keyword arguments a recorded call
    passed through ``**kwargs``.
    """
    names: list[str] = []
    extra: list[str] = []
    for name, p in inspect.signature(m.forward).parameters.items():
        if p.kind == p.VAR_POSITIONAL:
            continue
        if p.kind == p.VAR_KEYWORD:
            if bound is not None:
                extra = list(bound.arguments.get(name, {}))
            continue
        names.append(name)
    return names + [e for e in extra if e not in names]


def call_values(bound: inspect.BoundArguments | None) -> dict[str, Any]:
    """Values of `root_params` in a recorded call."""
    if bound is None:
        return {}
    out: dict[str, Any] = {}
    for name, p in bound.signature.parameters.items():
        if p.kind == p.VAR_KEYWORD:
            out.update(bound.arguments.get(name, {}))
        elif p.kind != p.VAR_POSITIONAL and name in bound.arguments:
            out[name] = bound.arguments[name]
    return out


def _root_class(m: nn.Module, names: list[str]) -> type[nn.Module]:
    """A module class sharing ``m``'s children whose forward takes exactly ``names``.

    fx reads the parameters from the forward's code object, so decorators taking
    ``(*args, **kwargs)`` and ``**kwargs`` catch-alls would otherwise become proxies.
    """
    for n in names:
        if not n.isidentifier():
            raise ValueError(f"cannot trace argument {n!r} of {type(m).__name__}")
    params = ", ".join(["self", *names])
    call = ", ".join([*(f"{n}={n}" for n in names), "**self._mo_const"])
    src = f"def forward({params}):\n    return self._mo_forward({call})\n"
    ns: dict[str, Any] = {}
    exec(compile(src, f"<trace root {type(m).__name__}>", "exec"), ns)
    return type(f"Traced{type(m).__name__}", (_Bound,), {"forward": ns["forward"]})


class _Bound(nn.Module):
    """Stands in for a module while it is traced as a root (same children and tensors)."""

    def __init__(self, m: nn.Module, fn: Callable[..., Any], const: dict[str, Any]) -> None:
        super().__init__()
        self.__dict__["_mo_forward"] = fn
        self.__dict__["_mo_const"] = const
        self.__dict__["_mo_wrapped"] = m
        self._modules = m._modules
        self._parameters = m._parameters
        self._buffers = m._buffers

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_mo_wrapped"], name)


def _trace_one(
    m: nn.Module,
    names: list[str],
    concrete: dict[str, Any],
    tracer_kwargs: dict[str, Any],
    gc: GraphCollection,
    failed: dict[nn.Module, str],
    example: dict[str, Any],
) -> fx.GraphModule | None:
    override = _TRACE_FORWARDS.get(type(m))

    def fn(**kw: Any) -> Any:
        return override(m, **kw) if override is not None else m.forward(**kw)

    # constants are baked into the root function (no placeholders, no fx guards)
    tensor_names = [n for n in names if n not in concrete]
    try:
        root = _root_class(m, tensor_names)(m, fn, concrete)
    except ValueError as err:
        failed[m] = str(err)
        return None
    for _ in range(10_000):
        tracer = RobustTracer(failed=failed, example=example, **tracer_kwargs)
        tracer.failed.pop(m, None)
        try:
            graph = tracer.trace(root)
        except _RetraceError:
            continue
        except Exception as err:
            failed[m] = _short(err)
            return None
        gc._visited |= tracer.visited | {id(m)}
        return fx.GraphModule(root, graph, type(m).__name__)
    return None


def _leaf_graph(m: nn.Module, names: list[str], values: dict[str, Any]) -> fx.GraphModule:
    """A one-node graph calling the leaf module ``m`` (for leaves traced as roots)."""
    holder = nn.Module()
    holder.add_module("leaf", m)
    graph = fx.Graph()
    kwargs: dict[str, Any] = {}
    for n in names:
        if _has_tensor(values.get(n)):
            kwargs[n] = graph.placeholder(n)
        elif n in values:
            kwargs[n] = values[n]
    graph.output(graph.call_module("leaf", kwargs=kwargs))
    return fx.GraphModule(holder, graph, type(m).__name__)


def recursive_trace(
    model: nn.Module,
    concrete_args: dict[str, Any] | None = None,
    example_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    registry: SymMapRegistry | None = None,
) -> GraphCollection:
    """Trace ``model`` with torch.fx, falling back to leaves for failing submodules.

    A submodule whose forward cannot be traced becomes a leaf of its parent's graph (its
    failure is recorded) and its children are traced on their own, recursively.

    Args:
        model: the model.
        concrete_args: fixed values for forward arguments of the root (as in fx). Without
            ``example_inputs``, arguments with defaults are traced as their defaults.
        example_inputs: ``(args, kwargs)`` of one forward call. When given, forward
            arguments that are not tensors (flags, ``None``, caches) are traced as the
            constants they were in that call, for the root and for every sub-root.
        registry: `SymInfo` rules whose module types are leaves.

    Returns:
        The `GraphCollection` (``gc.calls`` holds the captured sub-root calls).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    gc = GraphCollection(model)
    failed: dict[nn.Module, str] = {}
    kwargs = {"registry": registry}
    calls: dict[int, inspect.BoundArguments] = {}
    if example_inputs is not None:
        calls[id(model)] = _bind(model, *example_inputs)
    pending: list[nn.Module] = [model]
    while pending:
        for m in pending:
            if example_inputs is not None and id(m) not in calls:
                continue  # not called by the example forward: nothing to learn from it
            bound = calls.get(id(m))
            names = root_params(m, bound)
            conc = _concrete_from_call(bound) if bound is not None else _defaults(m)
            if m is model:
                conc.update(concrete_args or {})
            if m is not model and _is_leaf(m, registry):
                gc._add(m, _leaf_graph(m, names, call_values(bound)), conc)
                gc._leaf_roots.add(id(m))
                gc._visited.add(id(m))
                continue
            gm = _trace_one(m, names, conc, kwargs, gc, failed, call_values(bound))
            if gm is not None:
                gc._add(m, gm, conc)
        pending = []
        for f, msg in failed.items():
            if id(f) not in gc._failed:
                gc._failed[id(f)] = msg
                gc._visited.add(id(f))
                pending.extend(c for c in _callable_children(f) if id(c) not in gc._graphs)
        if pending and example_inputs is not None:
            calls.update(capture_calls(model, example_inputs, pending))
    gc.calls = calls
    return gc


def _bind(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
    bound = inspect.signature(m.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound


def _concrete_from_call(bound: inspect.BoundArguments | None) -> dict[str, Any]:
    """Non-tensor arguments of a recorded call (incl. ``**kwargs``), as fx concrete args."""
    if bound is None:
        return {}
    return {k: v for k, v in call_values(bound).items() if not _has_tensor(v)}


def _defaults(m: nn.Module) -> dict[str, Any]:
    """Without a recorded call, arguments with defaults are traced as those defaults."""
    return {
        n: p.default
        for n, p in inspect.signature(m.forward).parameters.items()
        if p.default is not inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _is_leaf(m: nn.Module, registry: SymMapRegistry | None) -> bool:
    return (registry or SYM_RULES).is_registered(m) or any(rule(m) for rule in _LEAF_RULES)


def _has_tensor(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, list | tuple):
        return any(_has_tensor(v) for v in x)
    if isinstance(x, dict):
        return any(_has_tensor(v) for v in x.values())
    return False


@torch.no_grad()
def capture_calls(
    model: nn.Module,
    example_inputs: tuple[tuple[Any, ...], dict[str, Any]],
    modules: list[nn.Module],
) -> dict[int, inspect.BoundArguments]:
    """Run ``model`` once and record the first call of each of ``modules``."""
    calls: dict[int, inspect.BoundArguments] = {}
    handles: list[Any] = []

    def make_hook(m: nn.Module) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
            if id(mod) not in calls:
                calls[id(mod)] = _bind(mod, args, kw)

        return hook

    handles.extend(m.register_forward_pre_hook(make_hook(m), with_kwargs=True) for m in modules)
    try:
        args, kw = example_inputs
        model(*args, **kw)
    finally:
        for h in handles:
            h.remove()
    return calls


def _callable_children(m: nn.Module) -> list[nn.Module]:
    """Children with their own forward (descending through containers)."""
    out: list[nn.Module] = []
    for c in m.children():
        if isinstance(c, nn.ModuleList | nn.ModuleDict):
            out.extend(_callable_children(c))
        else:
            out.append(c)
    return out
