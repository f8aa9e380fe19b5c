"""Sequential GPTQ: block by block, each Hessian from the already quantized model's activations.

Steps (``GptqConfig.sequential``, the default):

1. :func:`plan_blocks` finds the repeated blocks (:func:`.blocks.find_block_list`) and assigns
   every shared-input group of quantized layers to its block (groups outside every block, such
   as a quantized ``lm_head``, are done before or after the blocks, as they run);
2. max calibration runs the forward loop once while :class:`.blocks.BlockInputCapture` records
   the inputs of block 0 and the other arguments of every block (quantized layers that run
   before the blocks take their Hessians from that full-precision pass, are rounded, and the
   block inputs are recorded again from one more pass);
3. for each block ``k``: with ``true_sequential``, for each group in execution order, block
   ``k`` runs on its cached inputs while a hook accumulates the group's Hessian, and the
   group's layers are rounded at once — so later groups see the outputs of already rounded
   layers (q/k/v, then o, then gate/up, then down in a LLaMA layer; the first pass counts how
   often each group runs per block call, so the later passes end each call as soon as their
   group has run); otherwise one run of the block (its own weights in full precision) gives
   all its Hessians. Then the quantized block runs once more and its outputs become block
   ``k + 1``'s inputs;
4. groups after the blocks get their Hessians from one pass of the whole quantized model.

Hessians are summed over data-parallel ranks before each solve, so all ranks round the same
way and stay in step. Memory: the hidden states entering one block for the whole calibration
set (``n_tokens x hidden`` floats) plus references to the blocks' other arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed as D
from .blocks import BlockInputCapture, BlockList, BlockReplayer, StopBlock, find_block_list
from .gptq import GptqConfig, hessian_hooks, solve_group
from .gptq_solver import HessianAccumulator
from .registry import ForwardLoop
from .sharing import SharedInputGroup

__all__ = ["BlockPlan", "plan_blocks", "sequential_gptq"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockPlan:
    """Blocks and the groups to solve in each (in execution order), plus the groups outside.

    ``before``: groups outside the blocks that first ran before any block's group (e.g. a
    quantized input projection); ``after``: the other groups outside (e.g. ``lm_head``).
    """

    blocks: BlockList
    per_block: tuple[tuple[SharedInputGroup, ...], ...]
    before: tuple[SharedInputGroup, ...]
    after: tuple[SharedInputGroup, ...]


def plan_blocks(model: nn.Module, groups: list[SharedInputGroup]) -> BlockPlan | str:
    """Assign ``groups`` (in first-run order) to the model's blocks.

    Returns:
        The plan, or a string saying why the model cannot be processed block by block.
    """
    found = find_block_list(model, [m for g in groups for m in g.modules])
    if isinstance(found, str):
        return found
    per_block: list[list[SharedInputGroup]] = [[] for _ in found.blocks]
    before: list[SharedInputGroup] = []
    after: list[SharedInputGroup] = []
    for g in groups:  # in first-run order
        where = {found.index_of(m) for m in g.modules}
        if len(where) != 1:
            return f"layers {g.names} read one tensor but lie in different blocks of {found.name!r}"
        k = where.pop()
        if k is not None:
            per_block[k].append(g)
        elif any(per_block):
            after.append(g)
        else:
            before.append(g)
    return BlockPlan(found, tuple(tuple(p) for p in per_block), tuple(before), tuple(after))


@contextmanager
def _weights_unquantized(groups: tuple[SharedInputGroup, ...]) -> Iterator[None]:
    """Within the context the groups' weight quantizers are off (their float weights run)."""
    qs = [m.weight_quantizer for g in groups for m in g.modules if m.weight_quantizer.is_enabled]
    for q in qs:
        q.disable()
    try:
        yield
    finally:
        for q in qs:
            q.enable()


class _StageHooks:
    """Hooks on some groups' first layers during one replay of a block.

    Per group ``i``: accumulate its Hessian when ``collect[i]``; count its calls in each
    block call; when ``stop[i]`` is set, end the block call (:class:`.blocks.StopBlock`) once
    the group has run that many times (nothing later in the block matters for its Hessian).
    """

    def __init__(
        self,
        block: nn.Module,
        groups: tuple[SharedInputGroup, ...],
        collect: tuple[bool, ...],
        stop: tuple[int | None, ...],
    ) -> None:
        self.accs = [
            HessianAccumulator(g.in_features) if c else None
            for g, c in zip(groups, collect, strict=True)
        ]
        self.counts: list[list[int]] = []
        n = len(groups)
        self._handles = [block.register_forward_pre_hook(lambda *_: self.counts.append([0] * n))]
        for i, g in enumerate(groups):

            def hook(_m: nn.Module, args: tuple[Any, ...], i: int = i) -> None:
                acc = self.accs[i]
                if acc is not None and args and isinstance(args[0], torch.Tensor):
                    acc.add(args[0])
                self.counts[-1][i] += 1
                if self.counts[-1][i] == stop[i]:
                    raise StopBlock

            self._handles.append(g.modules[0].register_forward_pre_hook(hook))

    def calls_per_block(self) -> tuple[int | None, ...]:
        """Per group: its calls in every block call when always the same and > 0, else None."""
        out: list[int | None] = []
        for i in range(len(self.accs)):
            seen = {c[i] for c in self.counts}
            out.append(seen.pop() if len(seen) == 1 and 0 not in seen else None)
        return tuple(out)

    def acc(self, i: int) -> HessianAccumulator:
        """Group ``i``'s Hessian accumulator."""
        acc = self.accs[i]
        assert acc is not None
        return acc

    def remove(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()


def _replay(replayer: BlockReplayer, k: int, hooks: _StageHooks) -> _StageHooks:
    try:
        replayer.run_block(k)
    finally:
        hooks.remove()
    return hooks


def _solve_block(
    replayer: BlockReplayer, k: int, groups: tuple[SharedInputGroup, ...], cfg: GptqConfig
) -> None:
    """Collect the Hessians of block ``k``'s groups and round their layers (step 3)."""
    block = replayer.blocks.blocks[k]
    n = len(groups)
    if not cfg.true_sequential:
        with _weights_unquantized(groups):
            hooks = _replay(replayer, k, _StageHooks(block, groups, (True,) * n, (None,) * n))
        for i, g in enumerate(groups):
            solve_group(g, hooks.acc(i), cfg)
        return
    # The first group's pass runs the whole block and counts how often each group runs per
    # block call; the later groups' passes then end every call once their group has run.
    first = (True,) + (False,) * (n - 1)
    hooks = _replay(replayer, k, _StageHooks(block, groups, first, (None,) * n))
    solve_group(groups[0], hooks.acc(0), cfg)
    counts = hooks.calls_per_block()
    for i in range(1, n):
        hooks = _replay(
            replayer, k, _StageHooks(block, groups[i : i + 1], (True,), counts[i : i + 1])
        )
        solve_group(groups[i], hooks.acc(0), cfg)


def _agree(capture: BlockInputCapture) -> str | None:
    """The capture's problem, or one if any rank had one (all ranks must take one path)."""
    bad = torch.tensor([0.0 if capture.problem is None else 1.0])
    if float(D.all_reduce_sum(bad)) > 0:
        return capture.problem or "another rank could not replay its blocks"
    return None


def _capture(
    model: nn.Module, forward_loop: ForwardLoop, plan: BlockPlan, cfg: GptqConfig
) -> BlockInputCapture | str:
    """Max calibration, recording the blocks' inputs in the same pass when it runs one.

    Layers before the blocks get their Hessians in that (full-precision) pass and are rounded;
    the blocks' inputs are then recorded again from the model with those layers quantized.

    Returns:
        The capture, or why the blocks cannot be replayed (then no weight has changed).
    """
    from .max import max_calibrate, run_forward_loop
    from .quant_utils import full_precision

    accs = [HessianAccumulator(g.in_features) for g in plan.before]
    handles = hessian_hooks(plan.before, accs)
    try:
        capture = BlockInputCapture(plan.blocks)
        with capture:
            max_calibrate(model, forward_loop, None)
        if not capture.hidden:  # weight-only configs: max calibration ran no forward pass
            capture = BlockInputCapture(plan.blocks)
            with capture, full_precision(model):
                run_forward_loop(model, forward_loop, "gptq: capture block inputs")
    finally:
        for h in handles:
            h.remove()
    problem = _agree(capture)
    if problem is not None or not plan.before:
        return problem or capture
    for g, acc in zip(plan.before, accs, strict=True):
        solve_group(g, acc, cfg)
    capture = BlockInputCapture(plan.blocks)
    with capture:
        run_forward_loop(model, forward_loop, "gptq: capture block inputs")
    problem = _agree(capture)
    if problem is not None:  # the same loop replayed fine a moment ago
        raise RuntimeError(f"gptq: the second pass over the calibration data differs: {problem}")
    return capture


def sequential_gptq(
    model: nn.Module, forward_loop: ForwardLoop, plan: BlockPlan, cfg: GptqConfig
) -> bool:
    """Run steps 2-4 of the module docstring.

    Returns:
        ``False`` (with a logged reason, after max calibration, before any weight changed)
        when the recorded block calls cannot be replayed; the caller then runs the one-pass
        algorithm.
    """
    capture = _capture(model, forward_loop, plan, cfg)
    if isinstance(capture, str):
        logger.warning("gptq: processing all layers in one pass: %s", capture)
        return False
    replayer = BlockReplayer(capture)
    del capture
    for k in tqdm(range(len(replayer)), desc="gptq blocks", unit="block"):
        if plan.per_block[k]:
            _solve_block(replayer, k, plan.per_block[k], cfg)
        if k + 1 < len(replayer):
            replayer.advance(k)
    if plan.after:
        from .max import run_forward_loop

        accs = [HessianAccumulator(g.in_features) for g in plan.after]
        handles = hessian_hooks(plan.after, accs)
        try:
            run_forward_loop(model, forward_loop, "gptq: layers outside the blocks")
        finally:
            for h in handles:
                h.remove()
        for g, acc in zip(plan.after, accs, strict=True):
            solve_group(g, acc, cfg)
    return True
