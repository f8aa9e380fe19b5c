"""Which module types are linear layers, and how their weight is laid out.

The shared-input finders (`shared_inputs`) group *linear-like* layers: any module computing
``y = x W^T + b`` on the last dim of its input. Most store ``W`` as ``[out, in]``
(``nn.Linear``); GPT-2's ``Conv1D`` stores ``[in, out]``. `LINEAR_LAYOUTS` is the extension
point: register a class (and whether it is transposed) to make it a candidate everywhere.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

__all__ = [
    "LINEAR_LAYOUTS",
    "LinearLayoutRegistry",
    "get_weight_2d",
    "in_features",
    "register_hf_conv1d",
    "set_weight_2d",
]


class LinearLayoutRegistry:
    """Per layer type: whether its weight is stored ``[out, in]`` (False) or ``[in, out]``."""

    def __init__(self) -> None:
        self._transposed: dict[type, bool] = {}

    def register(self, cls: type, transposed: bool = False) -> None:
        """Declare ``cls`` a linear layer (``y = x W^T + b`` with ``W`` ``[out, in]``)."""
        self._transposed[cls] = transposed

    def lookup(self, module: nn.Module) -> bool | None:
        """``transposed`` flag for ``module``'s class (or a base class); ``None``: not linear."""
        for cls in type(module).__mro__:
            if cls in self._transposed:
                return self._transposed[cls]
        return None


LINEAR_LAYOUTS = LinearLayoutRegistry()
LINEAR_LAYOUTS.register(nn.Linear)


def register_hf_conv1d() -> None:
    """GPT-2 style ``Conv1D`` (weight ``[in, out]``), once transformers is already imported.

    A model made of transformers layers has imported it; other models never pay its import.
    """
    if "transformers" not in sys.modules:
        return
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # optional dependency
        return
    LINEAR_LAYOUTS.register(Conv1D, transposed=True)


def get_weight_2d(module: nn.Module) -> torch.Tensor:
    """The layer's weight as ``[out, in]`` (a view of the parameter's data)."""
    flag = LINEAR_LAYOUTS.lookup(module)
    if flag is None:
        register_hf_conv1d()
        flag = LINEAR_LAYOUTS.lookup(module)
    if flag is None:
        raise TypeError(f"module: {type(module).__name__} is not a registered linear layer")
    weight: Any = module.weight
    return weight.data.T if flag else weight.data


def set_weight_2d(module: nn.Module, w: torch.Tensor) -> None:
    """Write an ``[out, in]`` weight back into the layer (in place, keeping dtype)."""
    weight: Any = module.weight
    get_weight_2d(module).copy_(w.to(weight.dtype))


def in_features(module: nn.Module) -> int:
    """Width of the input a layer reads: the ``in`` dim of a linear weight, else 0 (unknown)."""
    if LINEAR_LAYOUTS.lookup(module) is None:
        register_hf_conv1d()
    if LINEAR_LAYOUTS.lookup(module) is not None:
        return int(get_weight_2d(module).shape[1])
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        return int(weight.shape[1])
    return 0
