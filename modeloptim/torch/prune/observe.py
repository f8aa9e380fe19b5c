"""Running a model over data to observe it (importance scores, BatchNorm statistics).

Every data-driven step of pruning does the same: put the model in eval mode, attach hooks,
run at most ``max_batches`` batches through ``forward_func`` (or a plain call), then remove
the hooks and restore the training flag even when a batch raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle
from tqdm import tqdm

from modeloptim.torch.utils.profile import call_model

__all__ = ["ForwardFunc", "limited", "observing", "run_batch"]

#: ``forward_func(model, batch)``: how one batch is fed to the model.
ForwardFunc = Callable[[nn.Module, Any], Any]


def limited(data: Iterable[Any], max_batches: int | None, desc: str | None = None) -> Iterator[Any]:
    """The first ``max_batches`` batches of ``data`` (all when ``None``).

    A tqdm bar named ``desc`` shows progress when ``desc`` is given.
    """
    source = data if desc is None else tqdm(data, desc=desc, leave=False, total=max_batches)
    for i, batch in enumerate(source):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


def run_batch(model: nn.Module, batch: Any, forward_func: ForwardFunc | None = None) -> Any:
    """``forward_func(model, batch)``, or the model called on ``batch`` (see `call_model`)."""
    return forward_func(model, batch) if forward_func else call_model(model, batch)


@contextmanager
def observing(model: nn.Module, handles: Iterable[RemovableHandle] = ()) -> Iterator[None]:
    """``model`` in eval mode for the block; then remove ``handles`` and restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
