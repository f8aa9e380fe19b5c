"""Build a `SearchSpace` for a model: from the dependency analysis, or from a model plugin.

``SPACE_BUILDERS`` is the extension point: a builder is ``(applies(model), build(model,
dummy_input, config))``. Plugins for model families whose structure is known (LLaMA-style
decoders: hidden size, attention head groups, FFN width, depth) register ahead of the generic
builder, which turns every searchable group of `modeloptim.torch.trace.analyze` into a space
group.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modeloptim.torch.prune.plan import lookup_tensor
from modeloptim.torch.prune.space import AttrSpec, SearchSpace

__all__ = ["SPACE_BUILDERS", "SpaceBuilder", "build_space", "space_from_analysis"]


@dataclass(frozen=True)
class SpaceBuilder:
    """One way of building a search space (see module docstring)."""

    name: str
    applies: Callable[[nn.Module], bool]
    build: Callable[[nn.Module, Any, dict[str, Any]], SearchSpace]


class SpaceBuilderRegistry:
    """Ordered registry: the first builder that applies to a model wins."""

    def __init__(self) -> None:
        self._builders: list[SpaceBuilder] = []

    def register(
        self, name: str, applies: Callable[[nn.Module], bool], *, first: bool = True
    ) -> Callable[[Callable[..., SearchSpace]], Callable[..., SearchSpace]]:
        """Decorator registering a ``build(model, dummy_input, config)`` function."""

        def wrap(fn: Callable[..., SearchSpace]) -> Callable[..., SearchSpace]:
            b = SpaceBuilder(name, applies, fn)
            self._builders = [x for x in self._builders if x.name != name]
            self._builders.insert(0 if first else len(self._builders), b)
            return fn

        return wrap

    def find(self, model: nn.Module, name: str | None = None) -> SpaceBuilder:
        """The builder called ``name``, or the first that applies to ``model``."""
        for b in self._builders:
            if (name is None and b.applies(model)) or b.name == name:
                return b
        raise ValueError(
            f"space builder: none named {name!r}; known: {[b.name for b in self._builders]}"
        )


SPACE_BUILDERS = SpaceBuilderRegistry()


def _load_plugins() -> None:
    if "transformers" in sys.modules:
        importlib.import_module("modeloptim.torch.prune.plugins.llama")


def build_space(
    model: nn.Module,
    dummy_input: Any,
    config: dict[str, Any] | None = None,
    builder: str | None = None,
) -> SearchSpace:
    """Search space of ``model`` (the model is not modified).

    Args:
        model: the model.
        dummy_input: one forward's input (tensor, tuple, dict, or ``(args, kwargs)``).
        config: builder options (e.g. ``{"granule": {"hidden": 8}}``).
        builder: force a builder by name (``"trace"``, ``"llama"``); default: first that
            applies.

    Raises:
        ValueError: the model has no searchable groups.
    """
    _load_plugins()
    b = SPACE_BUILDERS.find(model, builder)
    space = b.build(model, dummy_input, config or {})
    if not space.groups:
        raise ValueError(
            "model: no searchable channel groups were found (every layer's width "
            "is fixed by the model's inputs/outputs or by ops the analyzer cannot "
            "change); see `modeloptim trace` for the reasons"
        )
    return space


def _spec_tree(spec: Any, sym_maps: dict[int, SearchSpace]) -> AttrSpec:
    from modeloptim.torch.trace import Symbol

    if isinstance(spec, Symbol):
        m = sym_maps.get(id(spec))
        if m is None:
            return AttrSpec("const", value=spec.size)
        return AttrSpec("count", m.tensors[""][0])
    if isinstance(spec, tuple):
        return AttrSpec("prod", parts=[_spec_tree(s, sym_maps) for s in spec])
    return AttrSpec("tuple", parts=[_spec_tree(s, sym_maps) for s in spec])


def space_from_analysis(model: nn.Module, result: Any) -> SearchSpace:
    """Turn a trace `AnalysisResult`'s searchable groups into a `SearchSpace`."""
    from modeloptim.torch.trace.symbols import spec_symbols

    space = SearchSpace()
    sym_maps: dict[int, SearchSpace] = {}
    attrs: dict[tuple[str, str], Any] = {}
    seen_tensor: dict[int, str] = {}
    for g in result.searchable_groups:
        sg = space.add_group(g.name, g.size)
        for name, dim, ch in g.member_channel_index():
            t = lookup_tensor(model, name)
            canonical = seen_tensor.setdefault(id(t), name)  # tied tensors: one entry
            if ch.numel() != t.shape[dim]:
                raise ValueError(
                    f"model: {name} dim {dim} has {t.shape[dim]} channels but the "
                    f"analysis saw {ch.numel()}"
                )
            space.add_map(canonical, dim, torch.where(ch >= 0, ch + sg.offset, ch))
        for owner, attr, spec in g.size_attrs:
            attrs[(owner, attr)] = spec
            for s in spec_symbols(spec):
                ch = g.symbol_channel_index(s)
                # a one-entry space per symbol reuses the row merging of tensor maps
                sym_maps.setdefault(id(s), SearchSpace()).add_map(
                    "", 0, torch.where(ch >= 0, ch + sg.offset, ch)
                )
    for key, spec in attrs.items():
        space.attrs[key] = _spec_tree(spec, sym_maps)
    return space


def _is_any(model: nn.Module) -> bool:
    del model
    return True


@SPACE_BUILDERS.register("trace", _is_any, first=False)
def _build_trace(model: nn.Module, dummy_input: Any, config: dict[str, Any]) -> SearchSpace:
    from modeloptim.torch.trace import analyze

    del config
    return space_from_analysis(model, analyze(model, dummy_input))
