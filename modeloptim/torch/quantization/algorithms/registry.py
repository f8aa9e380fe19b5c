"""Registry of calibration algorithms (``"max"``, ``None``, and later AWQ, SmoothQuant, GPTQ...).

Each algorithm is one pydantic config class plus one function registered with
:meth:`CalibrationAlgorithmRegistry.register`. Algorithms that are known to ModelOpt users but
not built yet are *planned*: their configs parse (so every preset validates), and
:meth:`CalibrationAlgorithmRegistry.get` raises ``NotImplementedError`` naming them, which
``quantize`` checks before the model is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

__all__ = [
    "AlgorithmConfig",
    "AlgorithmSpec",
    "CalibrationAlgorithmRegistry",
    "ForwardLoop",
    "PlannedAlgorithmConfig",
    "calibration_algorithms",
]

ForwardLoop = Callable[[nn.Module], Any]
"""A user callable that runs calibration data through the model: ``forward_loop(model)``."""

CalibFn = Callable[[nn.Module, "ForwardLoop | None", Any], None]


class AlgorithmConfig(BaseModel):
    """Base of every algorithm's config: ``method`` names the algorithm."""

    model_config = ConfigDict(extra="forbid")

    method: str


class PlannedAlgorithmConfig(AlgorithmConfig):
    """Config of an algorithm that is known but not built yet; keeps its options verbatim."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class AlgorithmSpec:
    """One registered algorithm: its name, config class and calibration function."""

    name: str
    config_cls: type[AlgorithmConfig]
    fn: CalibFn
    needs_forward_loop: bool


class CalibrationAlgorithmRegistry:
    """Name -> algorithm; the extension point for new calibration methods."""

    def __init__(self, planned: tuple[str, ...] = ()) -> None:
        self._specs: dict[str, AlgorithmSpec] = {}
        self._planned = set(planned)

    def register(
        self, name: str, config_cls: type[AlgorithmConfig], *, needs_forward_loop: bool = False
    ) -> Callable[[CalibFn], CalibFn]:
        """Decorator registering ``fn(model, forward_loop, config)`` as algorithm ``name``.

        Args:
            name: the ``method`` string users write (``"max"``, ``"awq_lite"``...).
            config_cls: pydantic config class validating the algorithm's options.
            needs_forward_loop: whether calibration data is required.
        """

        def deco(fn: CalibFn) -> CalibFn:
            if name in self._specs:
                raise ValueError(f"name: calibration algorithm {name!r} is already registered")
            self._specs[name] = AlgorithmSpec(name, config_cls, fn, needs_forward_loop)
            self._planned.discard(name)
            return fn

        return deco

    @property
    def names(self) -> list[str]:
        """Built algorithm names."""
        return sorted(self._specs)

    @property
    def known(self) -> list[str]:
        """Built and planned algorithm names (what a config may mention)."""
        return sorted(set(self._specs) | self._planned)

    def is_built(self, name: str) -> bool:
        """Whether ``name`` can run now."""
        return name in self._specs

    def parse(self, value: str | dict | AlgorithmConfig | None) -> AlgorithmConfig:
        """Validate an ``algorithm`` value (``"max"``, ``None``, ``{"method": ...}``).

        Raises:
            ValueError: unknown method or bad options, naming the allowed values.
        """
        if isinstance(value, AlgorithmConfig):
            return value
        if value is None:
            value = {"method": "none"}
        elif isinstance(value, str):
            value = {"method": value}
        if not isinstance(value, dict) or not isinstance(value.get("method"), str):
            raise ValueError(
                "algorithm: expected None, a method name or a dict with a 'method' key, "
                f"got {value!r}"
            )
        method = value["method"]
        if method in self._specs:
            cls: type[AlgorithmConfig] = self._specs[method].config_cls
        elif method in self._planned:
            cls = PlannedAlgorithmConfig
        else:
            raise ValueError(
                f"algorithm: unknown method {method!r}; expected one of {self.known} or None"
            )
        try:
            return cls(**value)
        except ValidationError as err:
            details = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise ValueError(f"algorithm: bad options for {method!r}: {details}") from None

    def get(self, name: str) -> AlgorithmSpec:
        """Return the spec of a built algorithm.

        Raises:
            NotImplementedError: ``name`` is planned but not built yet.
            ValueError: ``name`` is unknown.
        """
        if name in self._specs:
            return self._specs[name]
        if name in self._planned:
            raise NotImplementedError(
                f"calibration algorithm {name!r} is not implemented yet in modeloptim "
                f"(available: {self.names})"
            )
        raise ValueError(f"algorithm: unknown method {name!r}; expected one of {self.known}")


calibration_algorithms = CalibrationAlgorithmRegistry(
    planned=(
        "smoothquant",
        "awq_lite",
        "awq_clip",
        "awq_full",
        "gptq",
        "mse",
        "percentile",
        "entropy",
        "svdquant",
    )
)
