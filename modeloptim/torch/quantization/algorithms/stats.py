"""Per shared-input group activation statistics, collected in one full-precision pass.

For each :class:`~modeloptim.torch.trace.SharedInputGroup` forward pre-hooks on its members
see the shared input ``x`` (``[..., in]``; each distinct tensor once per model call, so a
group whose members read row subsets of one tensor, like MoE experts, sees all their rows)
and accumulate:

- ``abs_sum`` / ``count``: mean ``|x|`` per channel (AWQ),
- ``abs_max``: max ``|x|`` per channel (SmoothQuant; the input amax after scaling),
- a deterministic sample of at most ``max_rows`` token rows (priority sampling with a seeded
  generator: each row gets a random key, the largest keys are kept) for the AWQ searches,
- optionally ``X^T X`` (GPTQ's Hessian).

:meth:`GroupStats.sync` combines the statistics of all ranks when torch.distributed is
initialized (sums, maxima, and the union of the samples).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from modeloptim.torch.trace.shared_group import SharedInputGroup

from . import distributed as D
from .gptq_solver import HessianAccumulator
from .quant_utils import full_precision

__all__ = ["GroupStats", "collect_group_stats"]


class GroupStats:
    """Statistics of one group's input (see the module docstring).

    Args:
        in_features: channels of the input.
        max_rows: rows to keep in the sample (0: none).
        hessian: also accumulate ``X^T X``.
        seed: seed of the sampling keys.
    """

    def __init__(
        self, in_features: int, max_rows: int = 0, hessian: bool = False, seed: int = 0
    ) -> None:
        self.abs_sum = torch.zeros(in_features, dtype=torch.float64)
        self.abs_max = torch.zeros(in_features)
        self.count = 0
        self.max_rows = max_rows
        self.rows = torch.zeros(0, in_features)
        self._keys = torch.zeros(0)
        self._gen = torch.Generator().manual_seed(seed)
        self.hessian = HessianAccumulator(in_features) if hessian else None

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Add a batch ``x`` ``[..., in]``."""
        x2 = x.detach().reshape(-1, x.shape[-1]).float().cpu()
        a = x2.abs()
        self.abs_sum += a.sum(0, dtype=torch.float64)
        self.abs_max = torch.maximum(self.abs_max, a.amax(0))
        self.count += x2.shape[0]
        if self.max_rows:
            keys = torch.rand(x2.shape[0], generator=self._gen)
            self._keys = torch.cat([self._keys, keys])
            self.rows = torch.cat([self.rows, x2])
            if self._keys.numel() > self.max_rows:
                top = torch.topk(self._keys, self.max_rows).indices.sort().values
                self._keys, self.rows = self._keys[top], self.rows[top]
        if self.hessian is not None:
            self.hessian.add(x.detach())

    @property
    def abs_mean(self) -> torch.Tensor:
        """Mean ``|x|`` per channel ``[in]`` (float32)."""
        if self.count == 0:
            raise RuntimeError("no calibration input reached this layer")
        return (self.abs_sum / self.count).float()

    def sync(self, group: Any = None) -> None:
        """Combine with the other ranks (no-op without torch.distributed)."""
        if not D.is_distributed(group):
            return
        D.all_reduce_sum(self.abs_sum, group)
        D.all_reduce_max(self.abs_max, group)
        n = torch.tensor([self.count], dtype=torch.long)
        self.count = int(D.all_reduce_sum(n, group))
        if self.max_rows:
            keys = D.all_gather_cat(self._keys, group)
            rows = D.all_gather_cat(self.rows, group)
            if keys.numel() > self.max_rows:
                top = torch.topk(keys, self.max_rows).indices.sort().values
                keys, rows = keys[top], rows[top]
            self._keys, self.rows = keys, rows
        if self.hessian is not None:
            D.all_reduce_sum(self.hessian.sum_xxt, group)
            c = torch.tensor([self.hessian.count], dtype=torch.long)
            self.hessian.count = int(D.all_reduce_sum(c, group))


def collect_group_stats(
    model: nn.Module,
    groups: Sequence[SharedInputGroup],
    forward_loop: Callable[[nn.Module], Any],
    max_rows: int = 0,
    hessian: bool = False,
    seed: int = 0,
    desc: str = "collect activation statistics",
) -> list[GroupStats]:
    """Run ``forward_loop`` once in full precision and return one :class:`GroupStats` per group.

    Statistics are synchronized across ranks when torch.distributed is initialized.

    Raises:
        RuntimeError: a group saw no input (naming its layers).
    """
    stats = [
        GroupStats(g.in_features, max_rows, hessian, seed=seed + i) for i, g in enumerate(groups)
    ]
    handles = []
    # tensors seen in the current model call, per group (kept alive so keys stay unique)
    seen: list[dict[tuple[Any, ...], torch.Tensor]] = [{} for _ in groups]

    def new_call(*_: object) -> None:
        for d in seen:
            d.clear()

    handles.append(model.register_forward_pre_hook(new_call))
    for g, st, once in zip(groups, stats, seen, strict=True):

        def hook(
            _m: nn.Module,
            args: tuple[Any, ...],
            st: GroupStats = st,
            once: dict[tuple[Any, ...], torch.Tensor] = once,
        ) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0]
            key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()), x.dtype)
            if key not in once:
                once[key] = x
                st.add(x)

        handles.extend(m.register_forward_pre_hook(hook) for m in dict.fromkeys(g.modules))
    try:
        bar = tqdm(desc=desc, unit="batch", leave=False)

        def count(*_: object) -> None:
            bar.update(1)  # a forward hook's return value would replace the model's output

        h = model.register_forward_hook(count)
        try:
            with full_precision(model), torch.no_grad():
                forward_loop(model)
        finally:
            h.remove()
            bar.close()
    finally:
        for handle in handles:
            handle.remove()
        new_call()
    for g, st in zip(groups, stats, strict=True):
        st.sync()
        if st.count == 0:
            raise RuntimeError(f"calibration: layers {g.names} saw no input in forward_loop")
    return stats
