"""Save and restore an optimized model: its weights plus its optimizer state, in one file.

The file is a ``torch.save`` of ``{"modelopt_state": ..., "model_state_dict": ...}`` holding
only tensors and plain data, and it is read back with ``torch.load(weights_only=True)``: loading
never unpickles arbitrary objects.
"""

from __future__ import annotations

import copy
import os
import pickle
import zipfile
from typing import Any

import torch
from torch import nn

from modeloptim.torch.opt.mode import ModeRegistry, check_plain_data
from modeloptim.torch.opt.state import (
    modelopt_state,
    restore_from_modelopt_state,
    transplant,
)
from modeloptim.utils.io import atomic_file

__all__ = ["load_checkpoint", "restore", "save"]

_KEYS = ("modelopt_state", "model_state_dict")


def save(model: nn.Module, f: str | os.PathLike[str], registry: ModeRegistry | None = None) -> None:
    """Write ``model``'s weights and optimizer state to ``f`` (atomically).

    Args:
        model: a model with modes applied (or a plain one: then the state lists no modes).
        f: destination file path.
        registry: mode registry (default: ``MODES``).
    """
    state = modelopt_state(model, registry)
    check_plain_data(state, "modelopt_state")
    obj = {"modelopt_state": state, "model_state_dict": model.state_dict()}
    with atomic_file(f) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(f: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a file written by :func:`save` safely (``weights_only=True``) and check its layout.

    Raises:
        FileNotFoundError: no such file. ValueError: truncated, corrupted, not a modeloptim
        checkpoint, or holding pickled objects other than tensors and plain data.
    """
    path = os.fspath(f)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip; a cut-off file loses its index
        raise ValueError(f"checkpoint {path!r} is truncated or corrupted (not a torch archive)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"checkpoint {path!r} holds objects other than tensors and plain data; refusing to "
            f"unpickle them ({_first_line(err)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"checkpoint {path!r} is truncated or corrupted: {err}") from None
    if not isinstance(obj, dict) or any(k not in obj for k in _KEYS):
        raise ValueError(
            f"{path!r} is not a modeloptim checkpoint (expected a dict with keys {list(_KEYS)})"
        )
    return obj


def restore(
    model: nn.Module, f: str | os.PathLike[str], registry: ModeRegistry | None = None
) -> nn.Module:
    """Restore a model saved with :func:`save` into a freshly built, unmodified ``model``.

    Replays the saved modes, then loads the weights (strictly). On any error ``model`` is left
    unchanged (the work happens on a temporary copy).

    Returns:
        ``model`` itself, now computing exactly what was saved.

    Raises:
        FileNotFoundError / ValueError: see :func:`load_checkpoint`; ValueError also when the
        checkpoint does not match the model's architecture.
    """
    obj = load_checkpoint(f)
    work = copy.deepcopy(model)
    work = restore_from_modelopt_state(work, obj["modelopt_state"], registry, transactional=False)
    try:
        work.load_state_dict(obj["model_state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {os.fspath(f)!r} does not match this model's architecture: {err}"
        ) from None
    return transplant(model, work)


def _first_line(err: BaseException) -> str:
    # torch's message starts with a long explanation; the reason is in the line naming GLOBAL.
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    picked = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln]
    return (picked or lines or ["unpickling error"])[0]
