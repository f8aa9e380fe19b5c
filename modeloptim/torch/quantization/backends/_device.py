"""Device capability checks shared by the backends."""

from __future__ import annotations

import importlib.util
import os

import torch


def cuda_capability(x: torch.Tensor) -> tuple[int, int]:
    """Compute capability of ``x``'s CUDA device, ``(0, 0)`` for other devices."""
    if not x.is_cuda:
        return (0, 0)
    return torch.cuda.get_device_capability(x.device)


def triton_usable(x: torch.Tensor) -> bool:
    """Whether Triton kernels can run on ``x`` (a CUDA tensor, or CPU under the interpreter)."""
    if importlib.util.find_spec("triton") is None:
        return False
    return x.is_cuda or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
