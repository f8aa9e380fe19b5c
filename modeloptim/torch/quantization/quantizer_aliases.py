"""Second names for quantizers, so patterns written for NVIDIA ModelOpt's naming reach them.

Where a plugin lays quantizers out differently from ModelOpt (3-D MoE experts: here one
quantized linear view per expert, in ModelOpt ``ModuleList``s on the experts module), it
registers an *alias function* for its layer class in :data:`QUANTIZER_ALIASES`. Every pattern
match over quantizer names (``quant_cfg`` rules, ``set_quantizer_attribute``,
``enable_quantizer`` / ``disable_quantizer``, ``postprocess_amax``) then accepts a quantizer
when the pattern matches its own name *or* one of its aliases; a ``parent_class`` restriction
is checked against the layer that the alias names as the owner. Aliases are names only:
nothing is registered twice in the module tree, so ``state_dict``, save/restore and export are
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = ["QUANTIZER_ALIASES", "AliasFunction", "QuantizerAlias", "QuantizerAliasRegistry"]


@dataclass(frozen=True)
class QuantizerAlias:
    """Another name of one quantizer attribute.

    Attributes:
        name: the full dotted name in the other naming, e.g.
            ``"model.layers.0.mlp.experts.gate_up_proj_weight_quantizers.3"``.
        parent: the layer that naming treats as the quantizer's owner (an entry's
            ``parent_class`` is compared with this layer's registered class name).
    """

    name: str
    parent: nn.Module


AliasFunction = Callable[[str, nn.Module], "QuantizerAlias | None"]
"""``(full quantizer name, layer holding the quantizer) -> alias or None``."""


class QuantizerAliasRegistry:
    """Layer class -> alias function; consulted for every quantizer during pattern matching.

    Lookup is by ``isinstance`` (quantized wrappers are built as subclasses), so a function
    registered for a wrapper class also names the quantizers of its converted layers.
    """

    def __init__(self) -> None:
        self._fns: dict[type[nn.Module], AliasFunction] = {}

    def register(self, layer_cls: type[nn.Module]) -> Callable[[AliasFunction], AliasFunction]:
        """Decorator registering an alias function for the quantizers of ``layer_cls`` layers.

        Args:
            layer_cls: the (quantized) layer class whose quantizer attributes get aliases.

        Returns:
            A decorator taking the function and returning it unchanged.
        """
        if not (isinstance(layer_cls, type) and issubclass(layer_cls, nn.Module)):
            raise TypeError(f"layer_cls: expected an nn.Module subclass, got {layer_cls!r}")

        def deco(fn: AliasFunction) -> AliasFunction:
            if not callable(fn):
                raise TypeError(f"fn: expected a callable (name, layer) -> alias, got {fn!r}")
            self._fns[layer_cls] = fn
            return fn

        return deco

    def unregister(self, layer_cls: type[nn.Module]) -> None:
        """Remove the function registered for ``layer_cls`` (no error if none)."""
        self._fns.pop(layer_cls, None)

    def __contains__(self, layer_cls: object) -> bool:
        return layer_cls in self._fns

    def aliases(self, name: str, layer: nn.Module) -> tuple[QuantizerAlias, ...]:
        """Aliases of the quantizer ``name`` held by ``layer`` (empty for most quantizers).

        Args:
            name: the quantizer's full dotted name (``"<layer name>.<attribute>"``).
            layer: the module holding the quantizer as a child.
        """
        found = []
        for cls, fn in self._fns.items():
            if isinstance(layer, cls):
                alias = fn(name, layer)
                if alias is not None:
                    found.append(alias)
        return tuple(found)


#: The registry every quantizer-name match consults (plugins register into it on import).
QUANTIZER_ALIASES = QuantizerAliasRegistry()
