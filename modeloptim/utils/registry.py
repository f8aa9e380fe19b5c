"""`Registry`: a named table of extension functions filled by a decorator.

Most extension points of the package are "name -> function" tables (importance methods,
export layouts, ...). This one class gives them the same decorator, lookup and error message:
a lookup of an unknown name raises ``ValueError`` naming the argument and the known names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """``name -> item`` table; ``@registry.register("name")`` adds an item.

    Args:
        argument: what a name is called in error messages (the user-facing argument,
            e.g. ``"importance"``).

    Example:
        >>> SCORES: Registry[Callable[[int], int]] = Registry("score")
        >>> @SCORES.register("double")
        ... def double(x: int) -> int:
        ...     return 2 * x
        >>> SCORES["double"](3)
        6
    """

    def __init__(self, argument: str) -> None:
        self.argument = argument
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``item`` under ``name`` (a later one replaces it) and returning it.

        Raises:
            TypeError: ``name`` is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"name: expected a non-empty string, got {name!r}")

        def add(item: T) -> T:
            self._items[name] = item
            return item

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"{self.argument}: expected one of {sorted(self._items)}, got {name!r}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.argument!r}, {sorted(self._items)})"
