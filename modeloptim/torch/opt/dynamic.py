"""``DynamicModule``: turn a plain layer into a wrapped (quantized, elastic, ...) one in place.

A layer is converted by swapping its ``__class__`` to a generated subclass of
``(wrapper class, original class)``. The wrapper's methods (``forward``) run first and reach the
original implementation through ``super()``; the layer keeps its identity, its parameters (so
tied weights stay tied) and its hooks. ``export()`` swaps the class back and removes everything
the wrapper added, so the result is a plain module of the original class again.

Wrappers can also register *dynamic attributes*: an attribute (typically a parameter such as
``weight``) whose value is passed through a callback when read, e.g. to fake-quantize a weight
during ``forward`` or to slice it to an elastic width. The stored parameter is never replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from torch import nn

__all__ = ["DynamicModule", "dynamic_class", "swap_class"]

T = TypeVar("T", bound="DynamicModule")

# Generated classes are cached so that converting many layers of one type shares a class.
_GENERATED: dict[tuple[type, type], type] = {}

# Attribute that records which keys existed before conversion (removed again by ``export``).
_SNAPSHOT = "_dm_original_keys"
_CALLBACKS = "_dm_attribute_callbacks"


def dynamic_class(wrapper_cls: type[DynamicModule], original_cls: type[nn.Module]) -> type:
    """Return (and cache) the generated subclass ``(wrapper_cls, original_cls)``.

    Args:
        wrapper_cls: a ``DynamicModule`` subclass providing the new behaviour.
        original_cls: the layer's own class (e.g. ``nn.Linear``).

    Returns:
        A class named ``<Wrapper>_<Original>`` whose MRO puts the wrapper first.
    """
    key = (wrapper_cls, original_cls)
    if key not in _GENERATED:
        name = f"{wrapper_cls.__name__}_{original_cls.__name__}"
        _GENERATED[key] = type(
            name,
            (wrapper_cls, original_cls),
            {
                "_original_cls": original_cls,
                "_wrapper_cls": wrapper_cls,
                "__module__": wrapper_cls.__module__,
            },
        )
    return _GENERATED[key]


def _new_dynamic(wrapper_cls: type[DynamicModule], original_cls: type[nn.Module]) -> nn.Module:
    """Unpickling helper: an empty instance of the generated class (state set by pickle)."""
    cls = dynamic_class(wrapper_cls, original_cls)
    module: nn.Module = object.__new__(cls)
    return module


def swap_class(module: nn.Module, new_cls: type) -> nn.Module:
    """Swap ``module.__class__`` to ``new_cls`` (the one place where classes are swapped).

    Converting requires ``new_cls`` to be a subclass of the module's class; exporting requires
    the module's class to be a subclass of ``new_cls``. Anything else would give an object whose
    attributes do not match its methods and is refused.

    Args:
        module: the module to change in place.
        new_cls: the class it becomes.

    Returns:
        ``module`` itself (same object, new class).

    Raises:
        TypeError: if ``module`` is not an ``nn.Module`` or the classes are unrelated.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected an nn.Module, got {type(module).__name__}")
    old_cls = type(module)
    if not (issubclass(new_cls, old_cls) or issubclass(old_cls, new_cls)):
        raise TypeError(
            f"new_cls: {new_cls.__name__} is neither a subclass nor a base of "
            f"{old_cls.__name__}; refusing to swap"
        )
    module.__class__ = new_cls
    return module


class DynamicModule(nn.Module):
    """Base of wrappers that convert an existing layer in place (see module docstring).

    Subclasses override :meth:`_setup` to add submodules/buffers (e.g. quantizers) and may call
    :meth:`_register_dynamic_attribute`. Never instantiate a wrapper directly: use
    :meth:`convert`.
    """

    _original_cls: ClassVar[type[nn.Module]]
    _wrapper_cls: ClassVar[type[DynamicModule]]

    @classmethod
    def convert(cls: type[T], module: nn.Module, **setup_kwargs: Any) -> T:
        """Convert ``module`` in place into a ``cls``-wrapped layer and return it.

        Args:
            module: a plain layer (e.g. an ``nn.Linear``) not converted yet.
            **setup_kwargs: passed to :meth:`_setup`.

        Raises:
            TypeError: if ``module`` is already a ``DynamicModule``.
        """
        if isinstance(module, DynamicModule):
            raise TypeError(
                f"module: {type(module).__name__} is already converted; export() it first"
            )
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected an nn.Module, got {type(module).__name__}")
        snapshot = {
            "dict": set(module.__dict__),
            "modules": set(module._modules),
            "parameters": set(module._parameters),
            "buffers": set(module._buffers),
        }
        swap_class(module, dynamic_class(cls, type(module)))
        object.__setattr__(module, _SNAPSHOT, snapshot)
        object.__setattr__(module, _CALLBACKS, {})
        converted: T = module  # type: ignore[assignment]
        try:
            converted._setup(**setup_kwargs)
        except BaseException:
            converted.export()
            raise
        return converted

    @property
    def original_cls(self) -> type[nn.Module]:
        """The class the layer had before conversion."""
        return self._original_cls

    def _setup(self, **kwargs: Any) -> None:
        """Add what the wrapper needs (submodules, buffers, dynamic attributes)."""

    def _register_dynamic_attribute(
        self, name: str, callback: Callable[[nn.Module, Any], Any]
    ) -> None:
        """Pass reads of attribute ``name`` through ``callback(self, stored_value)``.

        Only attributes stored by ``nn.Module`` (parameters, buffers, submodules) qualify,
        because those are read through ``__getattr__``; the stored value stays untouched.
        """
        stored = {**self._parameters, **self._buffers, **self._modules}
        if name not in stored:
            raise AttributeError(
                f"name: {type(self).__name__} has no parameter, buffer or submodule {name!r}"
            )
        getattr(self, _CALLBACKS)[name] = callback

    def __getattr__(self, name: str) -> Any:
        value = super().__getattr__(name)
        callbacks = self.__dict__.get(_CALLBACKS)
        if callbacks and name in callbacks:
            return callbacks[name](self, value)
        return value

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # Generated classes cannot be found by name when unpickling: rebuild them from the
        # (importable) wrapper and original classes instead.
        return (_new_dynamic, (self._wrapper_cls, self._original_cls), self.__getstate__())

    def export(self) -> nn.Module:
        """Turn this layer back into a plain module of its original class (in place).

        Everything :meth:`_setup` added (submodules, parameters, buffers, attributes) is removed;
        the original parameters and buffers stay (with any values written since).

        Returns:
            The same object, now of class :attr:`original_cls`.
        """
        snapshot = self.__dict__[_SNAPSHOT]
        for store, key in (
            (self._modules, "modules"),
            (self._parameters, "parameters"),
            (self._buffers, "buffers"),
        ):
            for name in [n for n in store if n not in snapshot[key]]:
                del store[name]
        for name in [n for n in self.__dict__ if n not in snapshot["dict"]]:
            del self.__dict__[name]
        return swap_class(self, self._original_cls)
