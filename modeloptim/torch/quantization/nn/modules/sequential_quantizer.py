"""``SequentialQuantizer``: several :class:`TensorQuantizer` applied in order.

Used for two-step weight quantization such as W4A8 AWQ (INT4 blocks, then FP8 per tensor).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from ...config import QuantizerAttributeConfig
from .tensor_quantizer import TensorQuantizer

__all__ = ["SequentialQuantizer"]


class SequentialQuantizer(nn.Sequential):
    """Apply ``quantizers`` one after the other (an ``nn.Sequential`` of TensorQuantizers)."""

    def __init__(self, *quantizers: TensorQuantizer) -> None:
        if not quantizers:
            raise ValueError("quantizers: SequentialQuantizer needs at least one TensorQuantizer")
        for i, q in enumerate(quantizers):
            if not isinstance(q, TensorQuantizer):
                raise TypeError(
                    f"quantizers[{i}]: expected TensorQuantizer, got {type(q).__name__}"
                )
        super().__init__(*quantizers)

    def quantizers(self) -> list[TensorQuantizer]:
        """The quantizers, in application order."""
        return [q for q in self if isinstance(q, TensorQuantizer)]

    def set_from_attribute_config(
        self, attributes: Sequence[QuantizerAttributeConfig | Mapping[str, Any]]
    ) -> None:
        """Apply one attribute config per quantizer (list length must match)."""
        if isinstance(attributes, (Mapping, QuantizerAttributeConfig)) or len(attributes) != len(
            self
        ):
            raise ValueError(
                f"attributes: expected a list of {len(self)} attribute configs, got {attributes!r}"
            )
        for q, a in zip(self.quantizers(), attributes, strict=True):
            q.set_from_attribute_config(a)

    @property
    def is_enabled(self) -> bool:
        """True when any quantizer in the chain is enabled."""
        return any(q.is_enabled for q in self.quantizers())

    def disable(self) -> None:
        """Disable every quantizer."""
        for q in self.quantizers():
            q.disable()

    def enable(self) -> None:
        """Enable every quantizer."""
        for q in self.quantizers():
            q.enable()

    @contextmanager
    def only_first(self) -> Iterator[TensorQuantizer]:
        """Context in which all quantizers but the first are disabled (then restored)."""
        qs = self.quantizers()
        saved = [q.is_enabled for q in qs]
        for q in qs[1:]:
            q.disable()
        try:
            yield qs[0]
        finally:
            for q, on in zip(qs, saved, strict=True):
                if on:
                    q.enable()
                else:
                    q.disable()

    @staticmethod
    @contextmanager
    def convert_to_single_quantizer(model: nn.Module) -> Iterator[nn.Module]:
        """Context replacing every SequentialQuantizer in ``model`` by its first quantizer."""
        swapped: list[tuple[nn.Module, str, SequentialQuantizer]] = []
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, SequentialQuantizer):
                    swapped.append((parent, name, child))
                    setattr(parent, name, child[0])
        try:
            yield model
        finally:
            for parent, name, child in swapped:
                setattr(parent, name, child)
