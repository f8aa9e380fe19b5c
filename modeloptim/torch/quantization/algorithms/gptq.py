"""Algorithm ``gptq``: Hessian-based sequential weight rounding (GPTQ) for quantized linears.

Steps:

1. check every quantized linear layer's weight format has a GPTQ column rule (integer
   per-tensor/per-channel/blocks, FP8, NVFP4; see :mod:`.column_quant`) — before anything
   changes;
2. find the layers that read the same input (:mod:`.sharing`): they share one Hessian;
3. max calibration of every quantizer;
4. Hessians ``H = 2 X^T X / n`` of each group's input, summed over ranks when
   torch.distributed is initialized:

   - ``sequential=True`` (default, as GPTQ and ModelOpt do): block by block (decoder layers),
     each from the activations of the model whose earlier blocks — and, with
     ``true_sequential``, earlier layers of the same block — are already rounded
     (:mod:`.gptq_sequential`). Models without a list of repeated blocks fall back to one pass
     (the reason is logged);
   - ``sequential=False``: all from one pass over the full-precision model;

5. per layer, :func:`.gptq_solver.gptq_quantize` rounds the weight with the layer's own
   format; the rounded weight is written into the layer and, for static block formats, the
   block amax GPTQ used is stored in the weight quantizer, so that fake quantization of the
   new weight reproduces GPTQ's result exactly.

Measured on SmolLM2-135M (2,048 calibration tokens, ``benchmarks/calib_algorithms.py``):
sequential vs one pass gives perplexity 24.07 vs 24.29 (INT4 block-128) and 24.95 vs 25.79
(NVFP4), for about 7% more calibration time.

``act_order`` is on by default (with static groups, see :mod:`.gptq_solver`): on SmolLM2-135M
INT4 block-128 (one pass) it gave perplexity 24.6 instead of 27.2 without it (RTN: 33.0).

Too little calibration data: with fewer tokens than input channels the Hessian is singular;
the relative damping (``percdamp``) keeps it invertible (a warning says so) and the damping is
escalated automatically if Cholesky still fails; a layer that saw no token raises an error.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from ..formats.granularity import Blocked
from ..nn import TensorQuantizer
from . import distributed as D
from .column_quant import IntColumns, column_quantizer_for
from .gptq_solver import HessianAccumulator, gptq_quantize
from .quant_utils import discover_groups, full_precision, quant_linear_layers
from .registry import AlgorithmConfig, ForwardLoop, calibration_algorithms
from .sharing import SharedInputGroup, get_weight_2d, set_weight_2d

__all__ = ["GptqConfig", "gptq", "hessian_hooks", "solve_group", "sync_hessian"]

logger = logging.getLogger(__name__)


class GptqConfig(AlgorithmConfig):
    """``gptq`` options (ModelOpt/AutoGPTQ names)."""

    method: Literal["gptq"] = "gptq"
    percdamp: float = Field(default=0.01, gt=0.0, le=1.0, description="damping / mean(diag(H))")
    block_size: int = Field(default=128, ge=1, description="lazy-update block width (columns)")
    act_order: bool = Field(default=True, description="round columns by decreasing diag(H)")
    sequential: bool = Field(
        default=True,
        description="block by block, each block's Hessians from the quantized earlier blocks "
        "(False: all Hessians from one full-precision pass)",
    )
    true_sequential: bool = Field(
        default=True,
        description="within a block, each shared-input group's Hessian from inputs produced by "
        "the block's already rounded layers (False: one pass per block, block in full precision)",
    )


def _check_formats(layers: dict[str, Any]) -> None:
    for name, m in layers.items():
        wq = m.weight_quantizer
        if not isinstance(wq, TensorQuantizer):
            raise NotImplementedError(
                f"gptq: layer {name!r} has a {type(wq).__name__} weight quantizer; GPTQ "
                "supports a single TensorQuantizer per weight"
            )
        w = get_weight_2d(m)
        column_quantizer_for(wq.format, torch.ones(()), w)  # raises for unsupported formats


@torch.no_grad()
def _quantize_layer(m: Any, h: torch.Tensor, cfg: GptqConfig) -> None:
    wq: TensorQuantizer = m.weight_quantizer
    w = get_weight_2d(m)
    rule = column_quantizer_for(wq.format, wq.amax, w)
    q = gptq_quantize(w.float(), h, rule, cfg.block_size, cfg.percdamp, cfg.act_order)
    set_weight_2d(m, q)
    g = wq.format.granularity
    if isinstance(rule, IntColumns) and rule.group_size and not g.dynamic:
        assert isinstance(g, Blocked)
        # Blocks are row-major over [out, in / group]: block (r, j) -> index r * n + j.
        amax = torch.stack([rule.group_amax[j] for j in sorted(rule.group_amax)], dim=1)
        wq.amax = amax.reshape(-1, 1)


def solve_group(group: SharedInputGroup, acc: HessianAccumulator, cfg: GptqConfig) -> None:
    """Round the weights of every layer of ``group`` with the group's Hessian ``acc``.

    The Hessian is first summed over the data-parallel ranks (no-op without
    torch.distributed), so every rank rounds with the same ``H``.
    """
    sync_hessian(acc)
    if acc.count < group.in_features:
        warnings.warn(
            f"gptq: layers {group.names} saw {acc.count} tokens for {group.in_features} "
            "input channels; the Hessian is rank-deficient and damping stands in for the "
            "missing data (use more calibration tokens)",
            stacklevel=3,
        )
    h = acc.hessian
    for m in group.modules:
        _quantize_layer(m, h, cfg)


def sync_hessian(acc: HessianAccumulator) -> None:
    """Sum ``X^T X`` and the token count over ranks (no-op without torch.distributed)."""
    if not D.is_distributed():
        return
    D.all_reduce_sum(acc.sum_xxt)
    c = torch.tensor([acc.count], dtype=torch.long)
    acc.count = int(D.all_reduce_sum(c))


def hessian_hooks(
    groups: Sequence[SharedInputGroup], accs: Sequence[HessianAccumulator]
) -> list[Any]:
    """Forward pre-hooks adding each group's input to its accumulator; returns the handles."""

    def hook(_m: nn.Module, args: tuple[Any, ...], acc: HessianAccumulator) -> None:
        if args and isinstance(args[0], torch.Tensor):
            acc.add(args[0])

    return [
        g.modules[0].register_forward_pre_hook(lambda m, a, acc=acc: hook(m, a, acc))
        for g, acc in zip(groups, accs, strict=True)
    ]


def _one_pass(
    model: nn.Module,
    forward_loop: ForwardLoop,
    groups: list[SharedInputGroup],
    cfg: GptqConfig,
    calibrate: bool,
) -> None:
    """All Hessians from one pass over the full-precision model (``sequential=False``)."""
    from .max import max_calibrate, run_forward_loop

    accs = [HessianAccumulator(g.in_features) for g in groups]
    handles = hessian_hooks(groups, accs)
    try:
        if calibrate:
            max_calibrate(model, forward_loop, None)
        # max calibration skips the data pass when only weights need an amax (weight-only
        # configs); the Hessians still need one.
        if any(acc.count == 0 for acc in accs):
            with full_precision(model):
                run_forward_loop(model, forward_loop, "gptq hessians")
    finally:
        for h in handles:
            h.remove()
    for g, acc in tqdm(list(zip(groups, accs, strict=True)), desc="gptq", unit="group"):
        solve_group(g, acc, cfg)


@calibration_algorithms.register("gptq", GptqConfig, needs_forward_loop=True)
def gptq(model: nn.Module, forward_loop: ForwardLoop | None, config: Any) -> None:
    """GPTQ weight rounding after max calibration (see the module docstring)."""
    from .gptq_sequential import plan_blocks, sequential_gptq

    cfg = config if isinstance(config, GptqConfig) else GptqConfig()
    if forward_loop is None:
        raise ValueError("forward_loop: algorithm 'gptq' needs calibration data")
    layers = quant_linear_layers(model)
    _check_formats(layers)
    groups = discover_groups(model, forward_loop) if layers else []
    if cfg.sequential and groups:
        plan = plan_blocks(model, groups)
        if isinstance(plan, str):
            logger.warning("gptq: processing all layers in one pass: %s", plan)
        elif sequential_gptq(model, forward_loop, plan, cfg):
            return
        else:
            _one_pass(model, forward_loop, groups, cfg, calibrate=False)
            return
    _one_pass(model, forward_loop, groups, cfg, calibrate=True)
