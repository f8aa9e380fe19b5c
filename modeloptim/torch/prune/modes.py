"""Pruning/NAS modes in the ``mto`` registry.

- ``fastnas``, ``gradnas``, ``minitron``, ``autonas``: convert a model into its search space
  (elastic layers). Metadata: the space as plain data and the active subnet, so
  ``mto.restore`` rebuilds the space without tracing the model again.
- ``export_nas``: make the active subnet physical (a plain, smaller ``nn.Module``). Metadata:
  the `PrunePlan`, which restore replays on the unpruned model before loading the weights.

A space mode needs the space, which is built from a dummy input (`build_space`); the Python
entry points (``mtn.convert``, ``mtp.prune``) build it and hand it over with `pending_space`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from modeloptim.torch.opt.mode import MODES
from modeloptim.torch.prune.elastic import (
    activate,
    active_keep,
    convert_elastic,
    export_elastic,
    export_plan,
)
from modeloptim.torch.prune.plan import PrunePlan
from modeloptim.torch.prune.space import SearchSpace

__all__ = [
    "SPACE_MODES",
    "AutoNASConfig",
    "ExportConfig",
    "FastNASConfig",
    "GradNASConfig",
    "MinitronConfig",
    "SpaceModeConfig",
    "pending_space",
]

_PENDING: contextvars.ContextVar[SearchSpace | None] = contextvars.ContextVar(
    "modeloptim_pending_space", default=None
)


class SpaceModeConfig(BaseModel):
    """Search-space options shared by the pruning modes.

    Attributes:
        channel_divisor: channel counts the search picks are multiples of this (hardware
            friendly; groups smaller than it use 1).
        builder: force a space builder (``"trace"``, ``"llama"``); default: first that applies.
    """

    model_config = ConfigDict(extra="forbid")
    channel_divisor: int = Field(4, ge=1)
    builder: str | None = None


class FastNASConfig(SpaceModeConfig):
    """``fastnas``: channels of CNNs/ViTs, magnitude importance, score-driven search."""


class GradNASConfig(SpaceModeConfig):
    """``gradnas``: heads/FFN of transformers ranked by gradient (Taylor) importance."""


class MinitronConfig(SpaceModeConfig):
    """``minitron``: LLaMA-family hidden size / heads / FFN ranked by activations.

    Attributes:
        channel_divisor: divisor of hidden and FFN sizes.
        prune: which kinds of groups may shrink (``"hidden"``, ``"ffn"``, ``"heads"``).
    """

    channel_divisor: int = Field(8, ge=1)
    prune: list[str] = Field(default_factory=lambda: ["hidden", "ffn"])


class AutoNASConfig(SpaceModeConfig):
    """``autonas``: per-group choices sampled by ``mtn.search``.

    Attributes:
        ratios: width ratios every group may take.
        group_ratios: ``{fnmatch pattern over group names: ratios}`` overriding ``ratios``.
    """

    ratios: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    group_ratios: dict[str, list[float]] = Field(default_factory=dict)


class ExportConfig(BaseModel):
    """``export_nas`` has no options."""

    model_config = ConfigDict(extra="forbid")


@contextlib.contextmanager
def pending_space(space: SearchSpace) -> Iterator[None]:
    """Hand ``space`` to the next space-mode conversion in this context."""
    token = _PENDING.set(space)
    try:
        yield
    finally:
        _PENDING.reset(token)


def _convert_space(model: nn.Module, config: BaseModel) -> tuple[nn.Module, dict[str, Any]]:
    del config
    space = _PENDING.get()
    if space is None:
        raise ValueError(
            "dummy_input: building a search space traces the model; use "
            "mtn.convert(model, mode, dummy_input=...) or mtp.prune(...)"
        )
    convert_elastic(model, space)
    return model, {"space": space.to_data(), "keep": None}


def _restore_space(model: nn.Module, config: BaseModel, metadata: dict[str, Any]) -> nn.Module:
    del config
    convert_elastic(model, SearchSpace.from_data(metadata["space"]))
    if metadata.get("keep") is not None:
        activate(model, metadata["keep"].bool(), metadata.get("drops"))
    return model


def _update_space(model: nn.Module, config: BaseModel, metadata: dict[str, Any]) -> None:
    del config
    if "_modeloptim_elastic" in model.__dict__:
        metadata["keep"] = active_keep(model).to(torch.uint8)
        metadata["drops"] = model.__dict__["_modeloptim_elastic"].get("drops") or {}


SPACE_MODES = {
    "fastnas": FastNASConfig,
    "gradnas": GradNASConfig,
    "minitron": MinitronConfig,
    "autonas": AutoNASConfig,
}
for _name, _cls in SPACE_MODES.items():
    MODES.register(
        _name,
        _cls,
        restore=_restore_space,
        update_for_save=_update_space,
        next_modes={"export_nas"},
    )(_convert_space)


def _restore_export(model: nn.Module, config: BaseModel, metadata: dict[str, Any]) -> nn.Module:
    del config
    export_elastic(model)
    return PrunePlan.from_data(metadata["plan"]).apply(model)


@MODES.register("export_nas", ExportConfig, restore=_restore_export)
def _convert_export(model: nn.Module, config: BaseModel) -> tuple[nn.Module, dict[str, Any]]:
    """Make the active subnet physical."""
    del config
    plan = export_plan(model)
    export_elastic(model)
    plan.apply(model)
    return model, {"plan": plan.to_data()}
