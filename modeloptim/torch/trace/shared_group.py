"""`SharedInputGroup`: linear layers that read one tensor, and what produced that tensor."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import nn

__all__ = ["GroupSource", "SharedInputGroup"]


class GroupSource(str, Enum):
    """How a group was found."""

    GRAPH = "graph"  # from the fx graphs of `recursive_trace`
    RUNTIME = "runtime"  # from tensor identities in one real forward (fallback)


@dataclass
class SharedInputGroup:
    """Linear layers that read one tensor.

    Attributes:
        names: qualified names of the member layers, in first-call order.
        modules: the member layers.
        producer: name of the module whose output the tensor is, or ``None`` (a model input,
            a functional expression, or unknown).
        producer_module: that module (``None`` when unknown).
        exclusive: True when group members are the only readers of the producer's output
            and the producer ran once (so scaling its parameters affects only this tensor).
        in_features: width of the shared tensor (its last dim).
        probe: the producer's input in the discovery pass (to verify a fold numerically).
        source: how the group was found (`GroupSource`).
        reason: for ``source == "runtime"`` groups of a graph search, why the graph could not
            be used for them (which module failed to trace, and its error).
    """

    names: list[str]
    modules: list[Any]
    producer: str | None = None
    producer_module: nn.Module | None = None
    exclusive: bool = False
    in_features: int = 0
    probe: torch.Tensor | None = field(default=None, repr=False)
    source: GroupSource = GroupSource.RUNTIME
    reason: str = ""

    @property
    def foldable(self) -> bool:
        """A producer exists and nothing but the members reads its output."""
        return self.producer_module is not None and self.exclusive
