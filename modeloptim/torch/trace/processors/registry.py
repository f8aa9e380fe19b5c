"""Registry of node processors: one small class per op family (the extension point)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import fx, nn

from modeloptim.torch.trace.context import AnalysisContext


class NodeProcessor:
    """Base of node processors: ``__call__`` sets ``ctx.desc[node]`` and ties atoms."""

    def __call__(self, ctx: AnalysisContext, node: fx.Node) -> None:
        """Process ``node``."""
        raise NotImplementedError


class ProcessorRegistry:
    """Maps fx targets to processors.

    Keys: function objects (``call_function``), method names (``call_method``, as strings),
    and module types (``call_module`` leaves without a `SymInfo` rule).
    """

    def __init__(self) -> None:
        self._functions: dict[Any, NodeProcessor] = {}
        self._methods: dict[str, NodeProcessor] = {}
        self._modules: dict[type[nn.Module], NodeProcessor] = {}

    def register(self, *targets: Any) -> Callable[[type[NodeProcessor]], type[NodeProcessor]]:
        """Class decorator registering one instance of the processor for ``targets``."""

        def deco(cls: type[NodeProcessor]) -> type[NodeProcessor]:
            inst = cls()
            for t in targets:
                if isinstance(t, str):
                    self._methods[t] = inst
                elif isinstance(t, type) and issubclass(t, nn.Module):
                    self._modules[t] = inst
                else:
                    self._functions[t] = inst
            return cls

        return deco

    def for_node(self, node: fx.Node, module: nn.Module | None = None) -> NodeProcessor | None:
        """The processor of a ``call_function``/``call_method``/``call_module`` node."""
        if node.op == "call_method":
            return self._methods.get(str(node.target))
        if node.op == "call_function":
            try:
                return self._functions.get(node.target)
            except TypeError:  # unhashable target
                return None
        if node.op == "call_module" and module is not None:
            for t in type(module).__mro__:
                if t in self._modules:
                    return self._modules[t]
        return None


PROCESSORS = ProcessorRegistry()
