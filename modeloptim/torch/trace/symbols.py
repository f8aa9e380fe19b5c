"""Shape hyperparameters: `Symbol`, per-module `SymInfo`, and the `SymMap` rule registry.

A rule is a tiny function ``rule(module) -> SymInfo`` registered with
``@SymMap.register(nn.Linear)``. It declares the module's symbols and where each one lives:
which dims of which parameters/buffers, of which forward inputs and outputs, and which module
attributes must be rewritten when the symbol changes size. A spec is a :class:`Symbol`
(the dim is exactly that symbol), a tuple of symbols (row-major product, e.g. ``(groups,
channels_per_group)``), or a list of such tuples (concatenation, e.g. MHA's packed q/k/v).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeAlias

from torch import nn


class CLType(str, Enum):
    """How a symbol is tied to other layers."""

    NONE = "none"  # internal to the module (heads, groups)
    INCOMING = "incoming"  # determined by the producer of the input (in_features)
    OUTGOING = "outgoing"  # determines the consumers of the output (out_features)


class SymState(str, Enum):
    """Analysis state of a symbol."""

    FREE = "free"  # not analyzed yet
    SEARCHABLE = "searchable"  # may change size; represents its group
    CONSTANT = "constant"  # must keep its size (see `Symbol.reasons`)
    DYNAMIC = "dynamic"  # follows the searchable symbol of its group


@dataclass(eq=False)
class Symbol:
    """A shape hyperparameter of one layer.

    Attributes:
        name: the hyperparameter's name (``"out_features"``, ``"num_heads"``).
        size: its current value.
        cl_type: how it is tied across layers.
        constant_reason: set by a rule for symbols that can never change (vocabulary size).
        elastic_dims: ``(tensor name, dim)`` pairs of the module's parameters/buffers that
            change size with it (filled from the `SymInfo` tensor specs).
        state: analysis state.
        reasons: why it is constant (empty unless ``state`` is ``CONSTANT``).
        parent: the searchable symbol this one follows when ``state`` is ``DYNAMIC``.
    """

    name: str
    size: int
    cl_type: CLType = CLType.NONE
    constant_reason: str | None = None
    elastic_dims: set[tuple[str, int]] = field(default_factory=set)
    state: SymState = SymState.FREE
    reasons: list[str] = field(default_factory=list)
    parent: Symbol | None = None

    @property
    def is_searchable(self) -> bool:
        """Whether the symbol may be changed (its group is not frozen)."""
        return self.state == SymState.SEARCHABLE

    @property
    def is_constant(self) -> bool:
        """Whether the symbol must keep its size."""
        return self.state == SymState.CONSTANT

    @property
    def is_dynamic(self) -> bool:
        """Whether the symbol follows another searchable symbol."""
        return self.state == SymState.DYNAMIC

    @property
    def is_cross_layer(self) -> bool:
        """Whether the symbol ties this layer to other layers."""
        return self.cl_type != CLType.NONE

    def __repr__(self) -> str:
        return f"Symbol({self.name}={self.size}, {self.cl_type.value}, {self.state.value})"


Spec: TypeAlias = "Symbol | tuple[Symbol, ...] | list[tuple[Symbol, ...]]"


def spec_size(spec: Any) -> int:
    """Number of channels a spec describes."""
    if isinstance(spec, Symbol):
        return spec.size
    if isinstance(spec, tuple):
        return math.prod(s.size for s in spec)
    return sum(spec_size(s) for s in spec)


def spec_symbols(spec: Any) -> list[Symbol]:
    """Symbols used by a spec."""
    if isinstance(spec, Symbol):
        return [spec]
    out: list[Symbol] = []
    for s in spec:
        out.extend(spec_symbols(s))
    return out


@dataclass
class SymInfo:
    """The symbols of one module and where they live.

    Attributes:
        symbols: the module's symbols by name.
        tensors: ``{param or buffer name: {dim: spec}}``; undeclared dims stay constant.
        inputs: ``{forward argument name: {dim: spec}}`` (dims may be negative).
        outputs: ``{output path: {dim: spec}}``; the path indexes into a tuple output
            (``()`` for a plain tensor output, ``(0,)`` for the first element).
        attrs: ``{module attribute: spec}`` rewritten (to the spec's size) after pruning.
        frozen_inputs: inputs whose sizes the module depends on (all their dims frozen).
    """

    symbols: dict[str, Symbol]
    tensors: dict[str, dict[int, Any]] = field(default_factory=dict)
    inputs: dict[str, dict[int, Any]] = field(default_factory=dict)
    outputs: dict[tuple[int, ...], dict[int, Any]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for tname, dims in self.tensors.items():
            for dim, spec in dims.items():
                for sym in spec_symbols(spec):
                    sym.elastic_dims.add((tname, dim))

    def named_symbols(self) -> Iterator[tuple[str, Symbol]]:
        """Iterate ``(name, symbol)``."""
        yield from self.symbols.items()

    @classmethod
    def of(cls, *symbols: Symbol, **kwargs: Any) -> SymInfo:
        """Build from symbols (named by their ``name``) and the spec keyword arguments."""
        return cls({s.name: s for s in symbols}, **kwargs)


Rule = Callable[[Any], "SymInfo | None"]  # None: no symbols for this instance


class SymMapRegistry:
    """Registry of `SymInfo` rules per module type (the extension point for new layers)."""

    def __init__(self) -> None:
        self._rules: dict[type[nn.Module], Rule] = {}

    def register(self, *types: type[nn.Module]) -> Callable[[Rule], Rule]:
        """Decorator registering ``rule`` for ``types`` (exact types and their subclasses)."""

        def deco(rule: Rule) -> Rule:
            for t in types:
                self._rules[t] = rule
            return rule

        return deco

    def unregister(self, *types: type[nn.Module]) -> None:
        """Remove the rules of ``types``."""
        for t in types:
            self._rules.pop(t, None)

    def rule_for(self, module: nn.Module) -> Rule | None:
        """The rule of ``module``'s type or of a registered base class.

        A base class's rule applies only if the subclass keeps its ``forward`` (a new
        forward may use the tensors differently).
        """
        cls = type(module)
        for t in cls.__mro__:
            if t in self._rules:
                return self._rules[t] if t is cls or cls.forward is t.forward else None
        return None

    def is_registered(self, module: nn.Module) -> bool:
        """Whether ``module`` has a rule (such modules are leaves of the trace)."""
        return self.rule_for(module) is not None


SYM_RULES = SymMapRegistry()


class SymMap:
    """The `SymInfo` of every module of a model that has a registered rule.

    Args:
        model: the model.
        registry: rules to use (default: the global registry, incl. loaded plugins).
    """

    register = staticmethod(SYM_RULES.register)

    def __init__(self, model: nn.Module, registry: SymMapRegistry | None = None) -> None:
        self.registry = registry or SYM_RULES
        self.model = model
        self._infos: dict[str, SymInfo] = {}
        self._by_module: dict[int, str] = {}
        for name, mod in model.named_modules(remove_duplicate=True):
            rule = self.registry.rule_for(mod)
            if rule is None or self._inside_registered(name):
                continue
            info = rule(mod)
            if info is None:
                continue
            _check_shapes(name, mod, info)
            self._infos[name] = info
            self._by_module[id(mod)] = name

    def _inside_registered(self, name: str) -> bool:
        return any(name.startswith(f"{other}.") for other in self._infos if other)

    def __contains__(self, module: object) -> bool:
        return id(module) in self._by_module

    def __getitem__(self, module: nn.Module | str) -> SymInfo:
        name = module if isinstance(module, str) else self._by_module[id(module)]
        return self._infos[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def name_of(self, module: nn.Module) -> str:
        """Qualified name of a registered module."""
        return self._by_module[id(module)]

    def named_sym_infos(self) -> Iterator[tuple[str, SymInfo]]:
        """Iterate ``(module name, SymInfo)``."""
        yield from self._infos.items()

    def named_symbols(self) -> Iterator[tuple[str, Symbol]]:
        """Iterate ``("module.symbol", symbol)`` over all modules."""
        for mname, info in self._infos.items():
            for sname, sym in info.named_symbols():
                yield (f"{mname}.{sname}" if mname else sname), sym


def _check_shapes(name: str, module: nn.Module, info: SymInfo) -> None:
    """Reject modules whose parameters do not have the shape their attributes promise."""
    for tname, dims in info.tensors.items():
        t = getattr(module, tname, None)
        if t is None:
            continue
        for dim, spec in dims.items():
            if dim >= t.dim() or t.shape[dim] != spec_size(spec):
                raise ValueError(
                    f"module {name or '<root>'} ({type(module).__name__}): {tname} has shape "
                    f"{tuple(t.shape)}, expected dim {dim} of size {spec_size(spec)} from its "
                    "attributes"
                )
