"""``QuantizeConfig``: the validated form of a ModelOpt-style ``{"quant_cfg", "algorithm"}`` dict.

``quant_cfg`` is accepted in both forms ModelOpt users write:

- a list of entries ``{"quantizer_name": pattern, "cfg": attributes | [attributes, ...],
  "enable": bool, "parent_class": "nn.BatchNorm2d"}``;
- the older dict ``{pattern: attributes}`` (and ``{"nn.BatchNorm2d": {pattern: attributes}}``
  for class-scoped entries).

Both normalize to a list of :class:`QuantizerCfgEntry`. Rules when applied to a model:

- patterns are ``fnmatch`` wildcards over full quantizer names
  (``"model.layers.0.mlp.up_proj.weight_quantizer"``) or their aliases (ModelOpt's names where
  the layout differs, e.g. ``"...mlp.experts.gate_up_proj_weight_quantizers.3"`` for MoE
  experts; see :mod:`modeloptim.torch.quantization.quantizer_aliases`); ``parent_class``
  restricts an entry to quantizers whose layer was registered under that name;
- entries named ``"default"`` match every quantizer and are applied *first*, wherever they
  appear (so merging a KV-cache preset into another one keeps working, as in ModelOpt);
- other entries apply in order, later ones win;
- an entry with ``cfg`` replaces the quantizer's attributes (unspecified attributes take their
  defaults) and enables it unless ``enable`` (or ``cfg["enable"]``) says otherwise; a list
  ``cfg`` makes a ``SequentialQuantizer``; an entry without ``cfg`` only enables/disables.
  In the dict form, ``{pattern: {"enable": False}}`` is such a toggle-only entry.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from modeloptim.torch.quantization.algorithms.registry import (
    AlgorithmConfig,
    calibration_algorithms,
)
from modeloptim.torch.quantization.config.quantizer import QuantizerAttributeConfig

__all__ = ["QuantizeConfig", "QuantizerCfgEntry", "format_validation_error", "normalize_quant_cfg"]

_ATTRIBUTE_FIELDS = frozenset(QuantizerAttributeConfig.model_fields)


class QuantizerCfgEntry(BaseModel):
    """One ``quant_cfg`` rule (see module docstring)."""

    model_config = ConfigDict(extra="forbid")

    quantizer_name: str
    cfg: QuantizerAttributeConfig | list[QuantizerAttributeConfig] | None = None
    enable: bool | None = None
    parent_class: str | None = None

    @field_validator("quantizer_name")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v:
            raise ValueError("quantizer_name: empty pattern")
        return v

    @field_validator("cfg", mode="before")
    @classmethod
    def _parse_cfg(cls, v: Any) -> Any:
        # Dispatch by type ourselves so errors name the attribute, not pydantic's union arms.
        if v is None or isinstance(v, QuantizerAttributeConfig):
            return v
        if isinstance(v, list | tuple):
            if not v:
                raise ValueError("cfg: empty list; give one attribute dict per quantizer")
            return [_attribute_config(a, f"item {i}: ") for i, a in enumerate(v)]
        return _attribute_config(v, "")

    @property
    def is_default(self) -> bool:
        """Whether this entry is the ``"default"`` fallback (matches every quantizer)."""
        return self.quantizer_name == "default"

    @property
    def resolved_enable(self) -> bool | None:
        """Enable state the entry sets (None: toggle-only entry without opinion)."""
        if self.enable is not None:
            return self.enable
        if isinstance(self.cfg, list):
            return any(c.enable for c in self.cfg)
        if self.cfg is not None:
            return self.cfg.enable
        return None


def _attribute_config(value: Any, where: str) -> QuantizerAttributeConfig:
    if isinstance(value, QuantizerAttributeConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{where}expected a dict of quantizer attributes, got {value!r}")
    try:
        return QuantizerAttributeConfig(**value)
    except ValidationError as err:
        raise ValueError(where + format_validation_error("", err).removeprefix(": ")) from None


def _is_class_scope(key: str, value: Any) -> bool:
    """``{"nn.BatchNorm2d": {"*": {...}}}``: a nested dict of pattern -> attributes."""
    return (
        isinstance(value, dict)
        and bool(value)
        and not (set(map(str, value)) & _ATTRIBUTE_FIELDS)
        and all(isinstance(v, dict) for v in value.values())
    )


def _dict_entry(pattern: str, attrs: Any, parent_class: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"quantizer_name": pattern}
    if parent_class is not None:
        entry["parent_class"] = parent_class
    if isinstance(attrs, dict) and set(attrs) == {"enable"}:
        entry["enable"] = attrs["enable"]
    else:
        entry["cfg"] = attrs
    return entry


def normalize_quant_cfg(quant_cfg: Any) -> list[Any]:
    """Turn either ``quant_cfg`` form into a list of entry dicts (not yet validated).

    Raises:
        ValueError: ``quant_cfg`` is neither a list nor a dict.
    """
    if isinstance(quant_cfg, list | tuple):
        return list(quant_cfg)
    if not isinstance(quant_cfg, dict):
        raise ValueError(
            f"quant_cfg: expected a list of entries or a dict {{pattern: attributes}}, "
            f"got {type(quant_cfg).__name__}"
        )
    entries: list[Any] = []
    for key, value in quant_cfg.items():
        if not isinstance(key, str):
            raise ValueError(f"quant_cfg: keys must be wildcard strings, got {key!r}")
        if _is_class_scope(key, value):
            entries.extend(_dict_entry(p, a, key) for p, a in value.items())
        else:
            entries.append(_dict_entry(key, value, None))
    return entries


class QuantizeConfig(BaseModel):
    """Validated quantization config: ordered ``quant_cfg`` rules plus the algorithm."""

    model_config = ConfigDict(extra="forbid")

    quant_cfg: list[QuantizerCfgEntry] = []
    algorithm: SerializeAsAny[AlgorithmConfig] = AlgorithmConfig(method="max")

    @field_validator("quant_cfg", mode="before")
    @classmethod
    def _normalize(cls, v: Any) -> list[Any]:
        return normalize_quant_cfg(v)

    @field_validator("algorithm", mode="before")
    @classmethod
    def _parse_algorithm(cls, v: Any) -> AlgorithmConfig:
        return calibration_algorithms.parse(v)

    @model_validator(mode="before")
    @classmethod
    def _fill_algorithm(cls, data: Any) -> Any:
        # ModelOpt's default algorithm is "max" (also when the key is absent).
        if isinstance(data, dict) and "algorithm" not in data:
            data = {**data, "algorithm": "max"}
        return data

    @classmethod
    def parse(cls, config: QuantizeConfig | dict[str, Any]) -> QuantizeConfig:
        """Validate ``config`` with a one-paragraph ``ValueError`` naming each bad field."""
        if isinstance(config, QuantizeConfig):
            return config
        if not isinstance(config, dict):
            raise ValueError(
                f"config: expected a dict with 'quant_cfg' and 'algorithm' or a preset name, "
                f"got {type(config).__name__}"
            )
        try:
            return cls.model_validate(config)
        except ValidationError as err:
            names: list[str] = []
            with contextlib.suppress(ValueError):
                names = [
                    str(e.get("quantizer_name", "?")) if isinstance(e, dict) else "?"
                    for e in normalize_quant_cfg(config.get("quant_cfg", []))
                ]
            raise ValueError(format_validation_error("config", err, names)) from None


def format_validation_error(
    what: str, err: ValidationError, entry_names: list[str] | None = None
) -> str:
    """Compact message ``config: quant_cfg[3 '*weight_quantizer'].cfg.num_bitz: ...``."""
    parts = []
    for e in err.errors():
        loc = e["loc"]
        path = ""
        for i, p in enumerate(loc):
            if isinstance(p, int):
                label = str(p)
                if i == 1 and loc[0] == "quant_cfg" and entry_names and p < len(entry_names):
                    label += f" {entry_names[p]!r}"
                path += f"[{label}]"
            else:
                path += f".{p}" if path else str(p)
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {msg}" if path else msg)
    return f"{what}: " + "; ".join(parts)
