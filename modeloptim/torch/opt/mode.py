"""Modes: every optimization technique is one registered mode.

A mode is one pydantic config class plus the functions that apply it to a model (``convert``)
and replay it on a fresh model from saved data (``restore``). ``next_modes`` says which modes may
follow it; ``MODES`` is the registry that ``apply_mode`` and ``restore`` look names up in.
Techniques register their mode once, where they are defined::

    @MODES.register("quantize", QuantizeConfig, next_modes={"quantize", "calibrate", "export"})
    def convert_quantize(model, config): ...   # -> (model, metadata)

Metadata returned by ``convert`` (and refreshed by ``update_for_save``) must be plain data:
tensors, numbers, strings, bools, None, lists and dicts with string keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

__all__ = ["MODES", "ModeDescriptor", "ModeRegistry", "check_plain_data"]

Metadata = dict[str, Any]
ConvertFn = Callable[[nn.Module, BaseModel], tuple[nn.Module, Metadata]]
RestoreFn = Callable[[nn.Module, BaseModel, Metadata], nn.Module]
UpdateFn = Callable[[nn.Module, BaseModel, Metadata], None]


@dataclass(frozen=True)
class ModeDescriptor:
    """What the framework needs to know about one mode.

    Attributes:
        name: registry key, e.g. ``"quantize"``.
        config_class: pydantic model validating the user's config.
        convert: applies the mode; returns the (possibly new) model and metadata.
        restore: replays the mode on an unmodified model from config + metadata. Defaults to
            ``convert`` (ignoring metadata) for modes whose result depends only on the config.
        update_for_save: refreshes metadata in place before the state is read (e.g. records
            calibrated amax shapes).
        next_modes: names allowed to follow this mode; ``None`` allows any.
    """

    name: str
    config_class: type[BaseModel]
    convert: ConvertFn
    restore: RestoreFn | None = None
    update_for_save: UpdateFn | None = None
    next_modes: frozenset[str] | None = None
    doc: str = field(default="", compare=False)

    def validate(self, config: BaseModel | dict[str, Any] | None) -> BaseModel:
        """Validate a user config (dict, instance or None for defaults) into ``config_class``."""
        if isinstance(config, self.config_class):
            return config
        if config is None:
            config = {}
        if isinstance(config, BaseModel):
            config = config.model_dump()
        if not isinstance(config, dict):
            raise TypeError(
                f"config for mode {self.name!r} must be a dict or {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        return self.config_class.model_validate(config)

    def replay(self, model: nn.Module, config: BaseModel, metadata: Metadata) -> nn.Module:
        """Run ``restore`` (or ``convert`` when the mode has no separate restore)."""
        if self.restore is not None:
            return self.restore(model, config, metadata)
        return self.convert(model, config)[0]


class ModeRegistry:
    """An explicit name -> :class:`ModeDescriptor` registry."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._modes: dict[str, ModeDescriptor] = {}

    def add(self, descriptor: ModeDescriptor) -> ModeDescriptor:
        """Register ``descriptor``; a second mode with the same name is an error."""
        if descriptor.name in self._modes and self._modes[descriptor.name] != descriptor:
            raise ValueError(f"mode {descriptor.name!r} is already registered in {self.name}")
        self._modes[descriptor.name] = descriptor
        return descriptor

    def register(
        self,
        name: str,
        config_class: type[BaseModel],
        *,
        restore: RestoreFn | None = None,
        update_for_save: UpdateFn | None = None,
        next_modes: set[str] | frozenset[str] | None = None,
    ) -> Callable[[ConvertFn], ConvertFn]:
        """Decorator form of :meth:`add` for a ``convert`` function."""

        def wrap(convert: ConvertFn) -> ConvertFn:
            self.add(
                ModeDescriptor(
                    name=name,
                    config_class=config_class,
                    convert=convert,
                    restore=restore,
                    update_for_save=update_for_save,
                    next_modes=None if next_modes is None else frozenset(next_modes),
                    doc=convert.__doc__ or "",
                )
            )
            return convert

        return wrap

    def __getitem__(self, name: str) -> ModeDescriptor:
        try:
            return self._modes[name]
        except KeyError:
            known = ", ".join(sorted(self._modes)) or "none"
            raise KeyError(f"unknown mode {name!r}; registered modes: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._modes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._modes))


#: The registry every technique registers its mode in.
MODES = ModeRegistry("modeloptim modes")


def check_plain_data(obj: Any, where: str = "state") -> None:
    """Raise TypeError unless ``obj`` is tensors/numbers/strings/bools/None/lists/dicts.

    Saved state must load with ``torch.load(weights_only=True)``: no arbitrary objects.
    """
    if obj is None or isinstance(obj, bool | int | float | str | torch.Tensor | torch.dtype):
        return
    if isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            check_plain_data(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where}: dict key {key!r} is not a string")
            check_plain_data(value, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} holds a {type(obj).__name__}; saved state may hold only tensors, numbers, "
        "strings, bools, None, lists and dicts"
    )
