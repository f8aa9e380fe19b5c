"""Optimizer state carried by a model: which modes were applied, with what config and metadata.

The state lives on the root module as ``model._modelopt_state`` (a list of plain-data records),
so it travels with the model object. :func:`modelopt_state` returns a copy ready to save (each
mode's ``update_for_save`` refreshes its metadata first); :func:`restore_from_modelopt_state`
replays the recorded modes on an unmodified model. Both the state format and its version are
plain data (see :func:`~modeloptim.torch.opt.mode.check_plain_data`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel
from torch import nn

from modeloptim import __version__
from modeloptim.torch.opt.mode import MODES, ModeRegistry, check_plain_data

__all__ = [
    "STATE_FORMAT_VERSION",
    "ModeloptStateManager",
    "apply_mode",
    "is_converted",
    "modelopt_state",
    "restore_from_modelopt_state",
]

#: Version of the saved state layout; bump it (and add a migration) when the layout changes.
STATE_FORMAT_VERSION = 1
_STATE_ATTR = "_modelopt_state"
# Older layouts upgrade through these functions: version -> function(state) -> next version.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

ModeSpec = str | tuple[str, BaseModel | dict[str, Any] | None]


class ModeloptStateManager:
    """Reads and writes the mode records stored on a model's root module."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @property
    def records(self) -> list[dict[str, Any]]:
        """The applied modes, oldest first (``{"mode", "config", "metadata"}`` each)."""
        return getattr(self.model, _STATE_ATTR, [])

    @property
    def last_mode(self) -> str | None:
        """Name of the most recently applied mode, or None."""
        return self.records[-1]["mode"] if self.records else None

    def append(self, mode: str, config: BaseModel, metadata: dict[str, Any]) -> None:
        """Record one applied mode (config stored as JSON-compatible plain data)."""
        record = {"mode": mode, "config": config.model_dump(mode="json"), "metadata": metadata}
        check_plain_data(record, f"state of mode {mode!r}")
        # Assign a new list (never mutate in place): deep copies of the model stay independent.
        object.__setattr__(self.model, _STATE_ATTR, [*self.records, record])

    def pop(self) -> dict[str, Any]:
        """Remove and return the most recent record (used to undo a failed mode)."""
        records = self.records
        if not records:
            raise IndexError("no mode has been applied to this model")
        object.__setattr__(self.model, _STATE_ATTR, records[:-1])
        return records[-1]

    def clear(self) -> None:
        """Forget every record (the model itself is not changed)."""
        if hasattr(self.model, _STATE_ATTR):
            object.__delattr__(self.model, _STATE_ATTR)


def is_converted(model: nn.Module) -> bool:
    """True if any mode has been applied to ``model``."""
    return bool(ModeloptStateManager(model).records)


def _normalize(mode: ModeSpec | Sequence[ModeSpec]) -> list[tuple[str, Any]]:
    if isinstance(mode, str):
        return [(mode, None)]
    if isinstance(mode, tuple) and len(mode) == 2 and isinstance(mode[0], str):
        return [(mode[0], mode[1])]
    if isinstance(mode, list | tuple):
        out: list[tuple[str, Any]] = []
        for item in mode:
            out.extend(_normalize(item))
        return out
    raise TypeError(
        f"mode must be a name, a (name, config) tuple or a list of those, got {type(mode).__name__}"
    )


def _check_order(registry: ModeRegistry, previous: str | None, mode: str) -> None:
    if previous is None:
        return
    allowed = registry[previous].next_modes
    if allowed is not None and mode not in allowed:
        names = ", ".join(sorted(allowed)) or "none"
        raise ValueError(
            f"mode {mode!r} may not follow mode {previous!r} (allowed after {previous!r}: {names})"
        )


def apply_mode(
    model: nn.Module,
    mode: ModeSpec | Sequence[ModeSpec],
    registry: ModeRegistry | None = None,
) -> nn.Module:
    """Apply one or more modes to ``model`` and record them in its optimizer state.

    Args:
        model: the model (converted in place where the mode allows; use the return value).
        mode: ``"name"``, ``("name", config)`` or a list of those, applied in order.
        registry: mode registry (default: :data:`~modeloptim.torch.opt.mode.MODES`).

    Raises:
        KeyError: unknown mode name. ValueError: a mode may not follow the previous one, or its
        config is invalid (checked for every mode before any is applied).
    """
    registry = registry or MODES
    plan = []
    previous = ModeloptStateManager(model).last_mode
    for name, config in _normalize(mode):
        descriptor = registry[name]
        _check_order(registry, previous, name)
        plan.append((descriptor, descriptor.validate(config)))
        previous = name
    for descriptor, config in plan:
        model, metadata = descriptor.convert(model, config)
        ModeloptStateManager(model).append(descriptor.name, config, metadata)
    return model


def modelopt_state(model: nn.Module, registry: ModeRegistry | None = None) -> dict[str, Any]:
    """Return the model's optimizer state as plain data, ready for ``torch.save``.

    Layout: ``{"format_version", "modeloptim_version", "modes": [{"mode", "config",
    "metadata"}, ...]}``.
    """
    registry = registry or MODES
    records = copy.deepcopy(ModeloptStateManager(model).records)
    for record in records:
        descriptor = registry[record["mode"]]
        if descriptor.update_for_save is not None:
            config = descriptor.validate(record["config"])
            descriptor.update_for_save(model, config, record["metadata"])
    state = {
        "format_version": STATE_FORMAT_VERSION,
        "modeloptim_version": __version__,
        "modes": records,
    }
    check_plain_data(state, "modelopt_state")
    return state


def _upgrade(state: Any) -> dict[str, Any]:
    if not isinstance(state, dict) or "modes" not in state or "format_version" not in state:
        raise ValueError(
            "modelopt_state must be a dict with 'format_version' and 'modes' "
            "(as returned by modelopt_state(model))"
        )
    version = state["format_version"]
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"modelopt_state has an invalid format_version {version!r}")
    if version > STATE_FORMAT_VERSION:
        raise ValueError(
            f"modelopt_state was written by a newer modeloptim (state format v{version}, "
            f"saved by modeloptim {state.get('modeloptim_version', '?')}); this is modeloptim "
            f"{__version__}, which reads up to v{STATE_FORMAT_VERSION}: upgrade modeloptim"
        )
    while version < STATE_FORMAT_VERSION:
        state = _MIGRATIONS[version](state)
        version = state["format_version"]
    return state


def transplant(dst: nn.Module, src: nn.Module) -> nn.Module:
    """Make ``dst`` become ``src`` (class and attributes) so callers' references stay valid."""
    dst.__class__ = src.__class__
    dst.__dict__.clear()
    dst.__dict__.update(src.__dict__)
    return dst


def restore_from_modelopt_state(
    model: nn.Module,
    modelopt_state: dict[str, Any],
    registry: ModeRegistry | None = None,
    *,
    transactional: bool = True,
) -> nn.Module:
    """Replay the modes recorded in ``modelopt_state`` on an unmodified ``model``.

    Weights are not loaded here (see :func:`~modeloptim.torch.opt.checkpoint.restore`).

    Args:
        model: a freshly built model of the architecture the state was made on.
        modelopt_state: what :func:`modelopt_state` returned.
        registry: mode registry (default: ``MODES``).
        transactional: work on a copy and only change ``model`` on success (costs one
            temporary copy of the model); ``False`` converts in place.

    Raises:
        ValueError: invalid, newer or inapplicable state; ``model`` is left unchanged.
    """
    registry = registry or MODES
    state = _upgrade(modelopt_state)
    if is_converted(model):
        raise ValueError(
            "restore_from_modelopt_state needs an unmodified model, but modes "
            f"{[r['mode'] for r in ModeloptStateManager(model).records]} were already applied"
        )
    work = copy.deepcopy(model) if transactional else model
    previous = None
    for i, record in enumerate(state["modes"]):
        try:
            name, config, metadata = record["mode"], record["config"], record["metadata"]
        except (KeyError, TypeError):
            raise ValueError(f"modelopt_state['modes'][{i}] is not a mode record") from None
        descriptor = registry[name]
        _check_order(registry, previous, name)
        cfg = descriptor.validate(config)
        try:
            work = descriptor.replay(work, cfg, metadata)
        except (KeyError, AttributeError, RuntimeError) as err:
            raise ValueError(
                f"cannot replay mode {name!r} on this model (is it the architecture the state "
                f"was saved from?): {err}"
            ) from err
        ModeloptStateManager(work).append(name, cfg, copy.deepcopy(metadata))
        previous = name
    return transplant(model, work) if transactional and work is not model else work
