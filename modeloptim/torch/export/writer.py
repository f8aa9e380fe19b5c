"""Write a Hugging Face style folder: sharded safetensors, JSON files, tokenizer files.

Everything is written into a temporary folder beside the target and renamed into place at
the end (:func:`modeloptim.utils.io.atomic_dir`), so a failure (including a full disk) leaves
no half-written checkpoint behind. Free space is checked before writing.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TOKENIZER_FILES",
    "check_free_space",
    "copy_side_files",
    "tensors_nbytes",
    "write_json",
    "write_safetensors",
]

#: files copied from the source model folder when present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
)


def tensors_nbytes(tensors: dict[str, torch.Tensor]) -> int:
    """Total bytes of ``tensors``."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def check_free_space(folder: Path, needed: int) -> None:
    """Raise ``OSError(ENOSPC)`` when ``folder``'s file system has less than ``needed`` bytes."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed * 1.05 + (1 << 20):
        raise OSError(
            errno.ENOSPC,
            f"export_dir: {needed / 2**20:.1f} MiB needed but only {free / 2**20:.1f} MiB free "
            f"on the file system of {str(folder)!r}",
        )


def write_safetensors(
    folder: Path,
    tensors: dict[str, torch.Tensor],
    max_shard_bytes: int = 5 * 2**30,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Write ``tensors`` as ``model.safetensors`` or shards plus ``model.safetensors.index.json``.

    Returns:
        The file names written.
    """
    from safetensors.torch import save_file

    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes: expected a positive int, got {max_shard_bytes}")
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    meta = {"format": "pt", **(metadata or {})}
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    for fname, shard in zip(names, shards, strict=True):
        save_file(shard, str(folder / fname), metadata=meta)
        weight_map.update(dict.fromkeys(shard, fname))
    index = {"metadata": {"total_size": tensors_nbytes(tensors)}, "weight_map": weight_map}
    write_json(folder / "model.safetensors.index.json", index)
    return [*names, "model.safetensors.index.json"]


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def copy_side_files(model: Any, folder: Path, tokenizer: Any = None) -> list[str]:
    """Copy tokenizer and generation config next to the weights.

    Sources, in order: ``tokenizer.save_pretrained`` when a tokenizer is given, the model's
    ``generation_config``, and the files of :data:`TOKENIZER_FILES` found in the folder the
    model was loaded from (``config._name_or_path``). Existing files are not overwritten.
    """
    written: list[str] = []
    if tokenizer is not None:
        before = set(os.listdir(folder))
        tokenizer.save_pretrained(folder)
        written += sorted(set(os.listdir(folder)) - before)
    gen = getattr(model, "generation_config", None)
    if gen is not None and not (folder / "generation_config.json").exists():
        gen.save_pretrained(folder)
        written.append("generation_config.json")
    src = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    src_dir = Path(src)
    if src and src_dir.is_dir():
        for fname in TOKENIZER_FILES:
            if (src_dir / fname).is_file() and not (folder / fname).exists():
                shutil.copy2(src_dir / fname, folder / fname)
                written.append(fname)
    return written
