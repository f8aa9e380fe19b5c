"""Turn a model's layers into quantized wrappers and apply ``quant_cfg`` rules to quantizers.

Quantizer names are the dotted paths of the quantizer modules (``"fc1.weight_quantizer"``);
patterns are ``fnmatch`` wildcards over them (see :mod:`.config.quantize` for the rules).
A pattern also accepts a quantizer when it matches one of the quantizer's aliases (ModelOpt's
names for layers laid out differently here, e.g. MoE experts; see :mod:`.quantizer_aliases`).
"""

from __future__ import annotations

import fnmatch
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from modeloptim.torch.quantization.config.quantize import QuantizerCfgEntry
from modeloptim.torch.quantization.config.quantizer import QuantizerAttributeConfig
from modeloptim.torch.quantization.nn.modules import (  # noqa: F401  (register the wrappers)
    quant_activations,
    quant_batchnorm,
    quant_conv,
    quant_linear,
    quant_multihead_attention,
    quant_pooling,
    quant_rnn,
)
from modeloptim.torch.quantization.nn.modules.quant_module import (
    QuantizerLike,
    QuantModule,
    QuantModuleRegistry,
)
from modeloptim.torch.quantization.nn.modules.sequential_quantizer import SequentialQuantizer
from modeloptim.torch.quantization.nn.modules.tensor_quantizer import TensorQuantizer
from modeloptim.torch.quantization.quantizer_aliases import QUANTIZER_ALIASES

__all__ = [
    "Pattern",
    "is_quantized",
    "named_quantizers",
    "named_tensor_quantizers",
    "quantizer_matches",
    "register_plugins",
    "replace_quant_module",
    "set_quantizer_attribute",
    "set_quantizer_by_cfg",
    "set_quantizer_enabled",
]

Pattern = str | Callable[[str], bool]
"""A wildcard over quantizer names, or a predicate on the name."""

AnyQuantizer = QuantizerLike


def register_plugins(model: nn.Module | None = None) -> None:
    """Register wrappers for third-party layers whose library is already imported.

    Plugins are imported only when their library is in ``sys.modules`` (a model using it
    exists), so importing modeloptim never imports transformers. With ``model``, plugins
    that detect layers structurally (3-D MoE experts) also register the classes found in it.
    """
    if "transformers" in sys.modules:
        from modeloptim.torch.quantization.plugins import hf_conv1d, hf_moe, huggingface

        huggingface.register_hf_attentions()
        hf_conv1d.register_hf_conv1d()
        if model is not None:
            hf_moe.register_hf_moe_experts(model)


def is_quantized(model: nn.Module) -> bool:
    """Whether any submodule of ``model`` is a quantized wrapper."""
    return any(isinstance(m, QuantModule) for m in model.modules())


def replace_quant_module(model: nn.Module) -> list[str]:
    """Convert, in place, every submodule whose exact type is registered.

    Returns:
        The names of the converted modules (``""`` for the root), in conversion order.
    """
    register_plugins(model)
    converted: list[str] = []
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantModule) or type(module) not in QuantModuleRegistry:
            continue
        QuantModuleRegistry.convert(module)
        converted.append(name)
    for qname, quantizer, _ in named_quantizers(model):
        for sub_name, q in _leaf_quantizers(qname, quantizer):
            q.name = sub_name
    return converted


def _leaf_quantizers(name: str, quantizer: AnyQuantizer) -> list[tuple[str, TensorQuantizer]]:
    if isinstance(quantizer, SequentialQuantizer):
        members = [q for q in quantizer if isinstance(q, TensorQuantizer)]
        return [(f"{name}.{i}", q) for i, q in enumerate(members)]
    return [(name, quantizer)]


def named_quantizers(model: nn.Module) -> Iterator[tuple[str, AnyQuantizer, nn.Module]]:
    """Yield ``(name, quantizer, parent layer)`` for each quantizer attribute of a layer.

    A ``SequentialQuantizer`` is yielded once (its members are not repeated).
    """
    for parent_name, parent in model.named_modules():
        if isinstance(parent, AnyQuantizer):
            continue
        for attr, child in parent.named_children():
            if isinstance(child, AnyQuantizer):
                yield (f"{parent_name}.{attr}" if parent_name else attr), child, parent


def named_tensor_quantizers(model: nn.Module) -> Iterator[tuple[str, TensorQuantizer]]:
    """Yield every ``TensorQuantizer`` (members of sequential ones as ``name.i``)."""
    for name, quantizer, _ in named_quantizers(model):
        yield from _leaf_quantizers(name, quantizer)


def _matches(pattern: Pattern, name: str) -> bool:
    if callable(pattern):
        return bool(pattern(name))
    return fnmatch.fnmatchcase(name, pattern)


def _matcher(pattern: Pattern) -> Callable[[str], Any]:
    """``name -> truthy`` for ``pattern``, compiled once (same rule as :func:`_matches`)."""
    if callable(pattern):
        return pattern
    return re.compile(fnmatch.translate(pattern)).match


def quantizer_matches(pattern: Pattern, name: str, layer: nn.Module) -> bool:
    """Whether ``pattern`` matches the quantizer ``name`` held by ``layer``, or an alias of it.

    Args:
        pattern: a wildcard or a predicate on names (called with each alias too).
        name: the quantizer's full dotted name.
        layer: the module holding the quantizer (its aliases come from
            :data:`.quantizer_aliases.QUANTIZER_ALIASES`).
    """
    match = _matcher(pattern)
    return bool(match(name)) or any(match(a.name) for a in QUANTIZER_ALIASES.aliases(name, layer))


def _parent_class_name(parent: nn.Module) -> str | None:
    cls = parent.original_cls if isinstance(parent, QuantModule) else type(parent)
    return QuantModuleRegistry.get_name(cls)


def _set_cfg(
    parent: nn.Module,
    name: str,
    quantizer: AnyQuantizer,
    cfg: QuantizerAttributeConfig | list[QuantizerAttributeConfig],
) -> AnyQuantizer:
    """Replace the attributes of ``quantizer`` (swapping single <-> sequential as needed)."""
    attr = name.rsplit(".", 1)[-1]
    if isinstance(cfg, list):
        new: AnyQuantizer = SequentialQuantizer(*(TensorQuantizer(c.model_dump()) for c in cfg))
    elif isinstance(quantizer, SequentialQuantizer):
        new = TensorQuantizer(cfg.model_dump())
    else:
        before = quantizer.format.describe()
        quantizer.set_from_attribute_config(cfg.model_dump())
        if quantizer.format.describe() != before:
            quantizer.reset_amax()  # an amax of the old layout would be silently wrong
        return quantizer
    device = next((t.device for t in parent.parameters(recurse=False)), None)
    if device is not None:
        new.to(device)
    setattr(parent, attr, new)
    for sub_name, q in _leaf_quantizers(name, new):
        q.name = sub_name
    return new


class _QuantizerIndex:
    """The quantizer attributes of a model, collected once for a batch of rules.

    ``named_quantizers`` walks every module; doing it once per rule made applying a preset
    cost rules x modules (17 x 1,090 module visits for SmolLM2-135M). Rules only swap
    quantizer objects in place (same name, same parent), so each slot is updated when a rule
    replaces its quantizer and the index stays equal to a fresh walk (aliases depend only on
    the name and the parent, so they are looked up once too).
    """

    __slots__ = ("_classes", "slots")

    def __init__(self, model: nn.Module) -> None:
        #: ``[name, quantizer, parent, aliases]`` per quantizer attribute, in
        #: ``named_quantizers`` order
        self.slots: list[list[Any]] = [
            [n, q, p, QUANTIZER_ALIASES.aliases(n, p)] for n, q, p in named_quantizers(model)
        ]
        self._classes: dict[int, str | None] = {}

    def accepts(
        self, slot: list[Any], match: Callable[[str], Any], parent_class: str | None
    ) -> bool:
        """Whether ``match`` accepts the slot's name or an alias, with its owner's class."""
        name, _, parent, aliases = slot
        if match(name) and (parent_class is None or self.parent_class(parent) == parent_class):
            return True
        return any(
            match(a.name) and (parent_class is None or self.parent_class(a.parent) == parent_class)
            for a in aliases
        )

    def parent_class(self, parent: nn.Module) -> str | None:
        """Registry name of the parent layer's (original) class, cached per module."""
        key = id(parent)
        if key not in self._classes:
            self._classes[key] = _parent_class_name(parent)
        return self._classes[key]


def _apply_entry(
    model: nn.Module,
    entry: QuantizerCfgEntry,
    pattern: Pattern | None = None,
    index: _QuantizerIndex | None = None,
) -> int:
    """Apply one rule to every matching quantizer; returns how many matched.

    ``index`` (built from ``model``) lets a batch of rules share one walk of the modules.
    """
    if pattern is None:
        pattern = "*" if entry.is_default else entry.quantizer_name
    if index is None:
        index = _QuantizerIndex(model)
    matches = _matcher(pattern)
    enable = entry.resolved_enable
    hits = 0
    for slot in index.slots:
        if not index.accepts(slot, matches, entry.parent_class):
            continue
        name, quantizer, parent, _ = slot
        hits += 1
        if entry.cfg is not None:
            quantizer = slot[1] = _set_cfg(parent, name, quantizer, entry.cfg)
        if enable is True:
            quantizer.enable()
        elif enable is False:
            quantizer.disable()
    return hits


def set_quantizer_by_cfg(
    model: nn.Module, quant_cfg: list[QuantizerCfgEntry], *, warn_unmatched: bool = True
) -> dict[str, int]:
    """Apply validated ``quant_cfg`` rules to ``model``'s quantizers.

    ``"default"`` entries go first, the others in order (later wins). An entry that configures
    or enables quantizers but matches none triggers a ``UserWarning`` naming its pattern
    (disable-only entries, like ``*router*``, are exclusions and stay silent).

    Returns:
        ``{pattern: number of quantizers matched}`` per entry.
    """
    ordered = [e for e in quant_cfg if e.is_default] + [e for e in quant_cfg if not e.is_default]
    counts: dict[str, int] = {}
    index = _QuantizerIndex(model)
    for entry in ordered:
        hits = _apply_entry(model, entry, index=index)
        counts[entry.quantizer_name] = counts.get(entry.quantizer_name, 0) + hits
        if hits == 0 and warn_unmatched and entry.resolved_enable is not False:
            where = f" under {entry.parent_class}" if entry.parent_class else ""
            warnings.warn(
                f"quant_cfg: pattern {entry.quantizer_name!r}{where} matches no quantizer "
                "in the model",
                UserWarning,
                stacklevel=3,
            )
    return counts


def set_quantizer_attribute(
    model: nn.Module,
    wildcard: Pattern,
    attribute: QuantizerAttributeConfig | dict[str, Any] | list[Any],
    parent_class: str | None = None,
) -> int:
    """Set (replace) the attributes of every quantizer matching ``wildcard``.

    Returns:
        The number of quantizers changed (a warning is issued when it is zero).
    """
    label = wildcard if isinstance(wildcard, str) else "<callable>"
    entry = QuantizerCfgEntry.model_validate(
        {"quantizer_name": label, "cfg": attribute, "parent_class": parent_class}
    )
    hits = _apply_entry(model, entry, wildcard)
    if hits == 0:
        warnings.warn(f"pattern {label!r} matches no quantizer in the model", stacklevel=2)
    return hits


def set_quantizer_enabled(model: nn.Module, wildcard: Pattern, enable: bool) -> int:
    """Enable or disable every quantizer matching ``wildcard``; returns how many matched."""
    if not (isinstance(wildcard, str) or callable(wildcard)):
        raise TypeError(
            f"wildcard: expected a pattern string or a callable, got {type(wildcard).__name__}"
        )
    label = wildcard if isinstance(wildcard, str) else "<callable>"
    entry = QuantizerCfgEntry(quantizer_name=label, enable=enable)
    hits = _apply_entry(model, entry, wildcard)
    if hits == 0:
        warnings.warn(
            f"wildcard: pattern {label!r} matches no quantizer in the model", stacklevel=3
        )
    return hits
