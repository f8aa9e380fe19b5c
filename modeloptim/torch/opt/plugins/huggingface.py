"""Hugging Face integration: checkpoints that carry the optimizer state.

After :func:`enable_huggingface_checkpointing`, saving a converted (e.g. quantized)
``transformers`` model also writes ``modelopt_state.pth`` next to its weights, and
``from_pretrained`` on such a folder replays the modes and loads every weight (quantizer amax
and scales included), so the loaded model computes exactly what was saved.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from modeloptim.torch.opt.mode import ModeRegistry
from modeloptim.torch.opt.state import (
    is_converted,
    modelopt_state,
    restore_from_modelopt_state,
)
from modeloptim.utils.io import atomic_file

__all__ = ["STATE_FILE", "enable_huggingface_checkpointing"]

STATE_FILE = "modelopt_state.pth"
_PATCHED: dict[str, Any] = {}


def _load_folder_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if files:
        out: dict[str, torch.Tensor] = {}
        for f in files:
            out.update(load_file(f))
        return out
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not bins:
        raise FileNotFoundError(f"no weights (*.safetensors or pytorch_model*.bin) in {folder}")
    out = {}
    for f in bins:
        out.update(torch.load(f, map_location="cpu", weights_only=True))
    return out


def _tied_keys(model: Any) -> set[str]:
    # Parameters shared with another name are saved once by transformers; the alias is missing.
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        else:
            seen[id(p)] = name
    return tied


def enable_huggingface_checkpointing(registry: ModeRegistry | None = None) -> None:
    """Patch ``transformers.PreTrainedModel`` save/load to carry modeloptim's state.

    Idempotent. Args:
        registry: mode registry used on load (default: ``MODES``).
    """
    from transformers import PreTrainedModel

    if _PATCHED:
        _PATCHED["registry"] = registry
        return
    _PATCHED["registry"] = registry
    orig_save = PreTrainedModel.save_pretrained
    orig_load = PreTrainedModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def save_pretrained(self: Any, save_directory: str | os.PathLike[str], *args: Any, **kw: Any):
        out = orig_save(self, save_directory, *args, **kw)
        if is_converted(self):
            state = modelopt_state(self, _PATCHED["registry"])
            with atomic_file(Path(save_directory) / STATE_FILE) as tmp:
                torch.save(state, tmp)
        return out

    def from_pretrained(cls: Any, pretrained_model_name_or_path: Any, *args: Any, **kw: Any):
        model = orig_load(cls, pretrained_model_name_or_path, *args, **kw)
        folder = Path(os.fspath(pretrained_model_name_or_path))
        state_file = folder / STATE_FILE
        if not state_file.is_file():
            return model
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        model = restore_from_modelopt_state(model, state, _PATCHED["registry"], transactional=False)
        weights = _load_folder_state_dict(folder)
        if "transformers" in sys.modules:  # 3-D MoE experts are saved unfused: fuse them
            from modeloptim.torch.quantization.plugins.hf_moe import fuse_unfused_expert_weights

            weights = fuse_unfused_expert_weights(model, weights)
        device = next(model.parameters()).device
        result = model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
        missing = set(result.missing_keys) - _tied_keys(model)
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{folder}: weights do not match the restored model (missing {sorted(missing)}, "
                f"unexpected {sorted(result.unexpected_keys)})"
            )
        return model

    PreTrainedModel.save_pretrained = save_pretrained  # type: ignore[method-assign]
    PreTrainedModel.from_pretrained = classmethod(from_pretrained)  # type: ignore[method-assign,assignment]
    _PATCHED["save"] = orig_save
