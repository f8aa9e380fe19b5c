"""Map ModelOpt-style quantizer attributes (or a named format) to a :class:`QuantFormat`.

Two explicit registries are the extension points:

- :data:`NAMED_FORMATS`: a name such as ``"nvfp4"`` -> the ModelOpt attributes it stands for
  (``num_bits`` plus default ``block_sizes``). A user's own ``axis``/``block_sizes`` win.
- :data:`FORMAT_RULES`: ``(num_bits kind, scale_bits)`` -> a builder taking a
  :class:`FormatSpec`. ``num_bits`` kind is ``"int"`` for integers, else the ``(E, M)`` tuple;
  ``scale_bits`` is the ``block_sizes["scale_bits"]`` tuple or ``None``.

Adding a format means registering one builder (and optionally a name); no ``if`` chain to edit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import QuantFormat
from .fp8 import FP8Format
from .granularity import Blocked, Granularity, PerChannel, PerTensor
from .integer import IntegerFormat
from .mx import MXFormat
from .nvfp4 import NVFP4Format

__all__ = [
    "FORMAT_RULES",
    "NAMED_FORMATS",
    "FormatRegistry",
    "FormatSpec",
    "parse_num_bits",
    "resolve_format",
]

_BLOCK_STR_KEYS = ("type", "scale_bits", "scale_block_sizes")


@dataclass(frozen=True)
class FormatSpec:
    """Normalized attributes a builder sees.

    Attributes:
        num_bits: int or ``(exponent_bits, mantissa_bits)``.
        axis: per-channel axis/axes or ``None``.
        block_dims: ``{dim: block size}`` (empty when not blocked).
        block_dynamic: block scales computed on the fly (``block_sizes["type"] == "dynamic"``).
        scale_bits: ``block_sizes["scale_bits"]`` or ``None``.
        unsigned: unsigned integer range.
        narrow_range: symmetric signed integer range.
        dynamic: top-level ``type == "dynamic"`` (amax computed from each input).
    """

    num_bits: int | tuple[int, int]
    axis: int | tuple[int, ...] | None = None
    block_dims: tuple[tuple[int, int | None], ...] = ()
    block_dynamic: bool = False
    scale_bits: tuple[int, int] | None = None
    unsigned: bool = False
    narrow_range: bool = True
    dynamic: bool = False

    def granularity(self) -> Granularity:
        """The element-scale granularity these attributes describe."""
        if self.block_dims:
            return Blocked(dict(self.block_dims), dynamic=self.block_dynamic or self.dynamic)
        if self.axis is not None:
            return PerChannel(self.axis, dynamic=self.dynamic)
        return PerTensor(dynamic=self.dynamic)


Builder = Callable[[FormatSpec], QuantFormat]
RuleKey = tuple[Any, tuple[int, int] | None]


class FormatRegistry:
    """``(num_bits kind, scale_bits) -> builder`` registry."""

    def __init__(self) -> None:
        self._rules: dict[RuleKey, Builder] = {}

    def register(
        self, num_bits: Any, scale_bits: tuple[int, int] | None = None
    ) -> Callable[[Builder], Builder]:
        """Decorator registering a builder for ``num_bits`` (``"int"`` or ``(E, M)``)."""

        def deco(fn: Builder) -> Builder:
            self._rules[(num_bits, scale_bits)] = fn
            return fn

        return deco

    def keys(self) -> list[RuleKey]:
        """Registered ``(num_bits kind, scale_bits)`` pairs."""
        return list(self._rules)

    def build(self, spec: FormatSpec) -> QuantFormat:
        """Build the format for ``spec``; unknown combinations raise ``ValueError``."""
        kind = "int" if isinstance(spec.num_bits, int) else spec.num_bits
        fn = self._rules.get((kind, spec.scale_bits))
        if fn is None:
            known = ", ".join(
                f"num_bits={k!r}" + (f" with scale_bits={s!r}" if s else "") for k, s in self._rules
            )
            extra = f" with block_sizes scale_bits={spec.scale_bits!r}" if spec.scale_bits else ""
            raise ValueError(
                f"num_bits: unsupported combination num_bits={spec.num_bits!r}{extra}; "
                f"supported: {known}"
            )
        return fn(spec)


FORMAT_RULES = FormatRegistry()

#: named format -> ModelOpt attributes it stands for
NAMED_FORMATS: dict[str, dict[str, Any]] = {
    "int8": {"num_bits": 8},
    "int4": {"num_bits": 4, "block_sizes": {-1: 128}},
    "fp8_e4m3": {"num_bits": (4, 3)},
    "fp8_e5m2": {"num_bits": (5, 2)},
    "nvfp4": {
        "num_bits": (2, 1),
        "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)},
    },
    "mxfp8": {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    "mxfp6": {"num_bits": (3, 2), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    "mxfp4": {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    "mxint8": {"num_bits": 8, "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
}


def parse_num_bits(num_bits: Any) -> int | tuple[int, int]:
    """Normalize ``num_bits`` (int, 2-sequence) or raise ``ValueError`` naming it."""
    if isinstance(num_bits, bool):
        raise ValueError(
            f"num_bits: expected an int, (E, M) tuple or format name, got {num_bits!r}"
        )
    if isinstance(num_bits, int):
        return num_bits
    if (
        isinstance(num_bits, (tuple, list))
        and len(num_bits) == 2
        and all(isinstance(b, int) and not isinstance(b, bool) for b in num_bits)
    ):
        return (int(num_bits[0]), int(num_bits[1]))
    raise ValueError(f"num_bits: expected an int, (E, M) tuple or format name, got {num_bits!r}")


def _parse_block_sizes(
    block_sizes: Mapping[Any, Any] | None,
) -> tuple[tuple[tuple[int, int | None], ...], bool, tuple[int, int] | None]:
    if not block_sizes:
        return (), False, None
    dims: list[tuple[int, int | None]] = []
    for k, v in block_sizes.items():
        if isinstance(k, str) and k not in _BLOCK_STR_KEYS:
            try:
                k = int(k)  # JSON round trips turn int keys into strings
            except ValueError:
                raise ValueError(
                    f"block_sizes: unknown key {k!r}; expected int dims or {_BLOCK_STR_KEYS}"
                ) from None
        if isinstance(k, int) and not isinstance(k, bool):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(
                    f"block_sizes: size for dim {k} must be a positive int or None, got {v!r}"
                )
            dims.append((k, v))
    btype = block_sizes.get("type", "static")
    if btype not in ("static", "dynamic"):
        raise ValueError(f"block_sizes: 'type' must be 'static' or 'dynamic', got {btype!r}")
    scale_bits = block_sizes.get("scale_bits")
    if scale_bits is not None:
        scale_bits = parse_num_bits(scale_bits)
        if isinstance(scale_bits, int):
            raise ValueError(
                f"block_sizes: scale_bits={scale_bits!r} (quantized integer scales) is not "
                "supported; use (4, 3) for NVFP4 or (8, 0) for MX"
            )
    if block_sizes.get("scale_block_sizes"):
        raise ValueError("block_sizes: 'scale_block_sizes' (double quantization) is not supported")
    if not dims:
        raise ValueError(f"block_sizes: needs at least one int dim key, got {dict(block_sizes)!r}")
    return tuple(dims), btype == "dynamic", scale_bits


def _get(cfg: Any, key: str, default: Any) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def resolve_format(cfg: Any) -> QuantFormat:
    """Build the :class:`QuantFormat` described by quantizer attributes.

    Args:
        cfg: a ``QuantizerAttributeConfig`` or a mapping with ModelOpt attribute names
            (``num_bits``, ``axis``, ``block_sizes``, ``unsigned``, ``narrow_range``,
            ``type``). ``num_bits`` may also be a name from :data:`NAMED_FORMATS`.

    Raises:
        ValueError: unknown ``num_bits``/``block_sizes`` combination (the message names them).
    """
    num_bits = _get(cfg, "num_bits", 8)
    axis = _get(cfg, "axis", None)
    block_sizes = _get(cfg, "block_sizes", None)
    if isinstance(num_bits, str):
        named = NAMED_FORMATS.get(num_bits.lower())
        if named is None:
            raise ValueError(
                f"num_bits: unknown format name {num_bits!r}; expected one of "
                f"{sorted(NAMED_FORMATS)}"
            )
        num_bits = named["num_bits"]
        if block_sizes is None and axis is None:
            block_sizes = named.get("block_sizes")
    if axis is not None and block_sizes:
        raise ValueError("axis and block_sizes: set one of them, not both")
    dims, block_dynamic, scale_bits = _parse_block_sizes(block_sizes)
    spec = FormatSpec(
        num_bits=parse_num_bits(num_bits),
        axis=tuple(axis) if isinstance(axis, list) else axis,
        block_dims=dims,
        block_dynamic=block_dynamic,
        scale_bits=scale_bits,
        unsigned=bool(_get(cfg, "unsigned", False)),
        narrow_range=bool(_get(cfg, "narrow_range", True)),
        dynamic=_get(cfg, "type", "static") == "dynamic",
    )
    if spec.unsigned and not isinstance(spec.num_bits, int):
        raise ValueError(f"unsigned: only integer formats can be unsigned, num_bits={num_bits!r}")
    return FORMAT_RULES.build(spec)


def _block_dict(spec: FormatSpec) -> dict[int, int | None] | None:
    return dict(spec.block_dims) or None


def _require_dynamic_blocks(spec: FormatSpec, name: str) -> None:
    if not spec.block_dims or not spec.block_dynamic:
        raise ValueError(
            f"block_sizes: {name} needs dynamic block scales, e.g. "
            f"{NAMED_FORMATS[name]['block_sizes']!r}"
        )
    if spec.axis is not None:
        raise ValueError(f"axis: {name} is block-scaled; axis must be None")


@FORMAT_RULES.register("int")
def _build_int(spec: FormatSpec) -> QuantFormat:
    return IntegerFormat(spec.num_bits, spec.unsigned, spec.narrow_range, spec.granularity())  # type: ignore[arg-type]


@FORMAT_RULES.register((4, 3))
@FORMAT_RULES.register((5, 2))
def _build_fp8(spec: FormatSpec) -> QuantFormat:
    assert isinstance(spec.num_bits, tuple)
    return FP8Format(spec.num_bits[0], spec.granularity())


@FORMAT_RULES.register((2, 1), (4, 3))
def _build_nvfp4(spec: FormatSpec) -> QuantFormat:
    if not spec.block_dims:
        raise ValueError(
            f"block_sizes: nvfp4 needs block scales, e.g. {NAMED_FORMATS['nvfp4']['block_sizes']!r}"
        )
    if spec.axis is not None:
        raise ValueError("axis: nvfp4 is block-scaled; axis must be None")
    return NVFP4Format(
        _block_dict(spec), dynamic_global=spec.dynamic, static_blocks=not spec.block_dynamic
    )


def _mx_builder(elem: str, name: str) -> Builder:
    def build(spec: FormatSpec) -> QuantFormat:
        _require_dynamic_blocks(spec, name)
        return MXFormat(elem, _block_dict(spec))

    return build


for _nb, _elem, _name in [
    ((4, 3), "e4m3", "mxfp8"),
    ((5, 2), "e5m2", "mxfp8"),
    ((3, 2), "e3m2", "mxfp6"),
    ((2, 3), "e2m3", "mxfp6"),
    ((2, 1), "e2m1", "mxfp4"),
]:
    FORMAT_RULES.register(_nb, (8, 0))(_mx_builder(_elem, _name))


@FORMAT_RULES.register("int", (8, 0))
def _build_mxint8(spec: FormatSpec) -> QuantFormat:
    if spec.num_bits != 8:
        raise ValueError(
            f"num_bits: MX integer blocks support num_bits=8 only, got {spec.num_bits!r}"
        )
    _require_dynamic_blocks(spec, "mxint8")
    return MXFormat("int8", _block_dict(spec))
