"""Modes, optimizer state and save/restore (``import modeloptim.torch.opt as mto``).

Also :class:`DynamicModule`, the in-place layer conversion used by quantization and pruning.
"""

from modeloptim.torch.opt.checkpoint import load_checkpoint, restore, save
from modeloptim.torch.opt.dynamic import DynamicModule, dynamic_class, swap_class
from modeloptim.torch.opt.mode import MODES, ModeDescriptor, ModeRegistry
from modeloptim.torch.opt.state import (
    STATE_FORMAT_VERSION,
    ModeloptStateManager,
    apply_mode,
    is_converted,
    modelopt_state,
    restore_from_modelopt_state,
)


def enable_huggingface_checkpointing() -> None:
    """Make ``save_pretrained``/``from_pretrained`` of transformers models carry the state."""
    from modeloptim.torch.opt.plugins.huggingface import enable_huggingface_checkpointing as _en

    _en()


__all__ = [
    "MODES",
    "STATE_FORMAT_VERSION",
    "DynamicModule",
    "ModeDescriptor",
    "ModeRegistry",
    "ModeloptStateManager",
    "apply_mode",
    "dynamic_class",
    "enable_huggingface_checkpointing",
    "is_converted",
    "load_checkpoint",
    "modelopt_state",
    "restore",
    "restore_from_modelopt_state",
    "save",
    "swap_class",
]
