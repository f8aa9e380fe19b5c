"""Algorithm ``smoothquant``: migrate activation outliers into the weights (SmoothQuant).

For each group of quantized linear layers that read one tensor (found in the fx graph by
:func:`modeloptim.torch.trace.shared_input_groups`), with ``a_c = max |x_c|`` over the
calibration data and ``w_c = max |W_:,c|`` over all members' weights, the per-channel smoothing
factor is ``s_c = a_c**alpha / w_c**(1 - alpha)``: inputs are divided by ``s`` and weights
multiplied by it, which leaves the float model unchanged and flattens the activation outliers
that per-tensor INT8 activations cannot represent. ``1/s`` is folded into the producing norm or
linear layer when nothing else reads its output (checked exactly), otherwise it becomes the
members' ``input_quantizer.pre_quant_scale`` (one shared tensor). Then every quantizer is max
calibrated and the members of each group get one input amax (the max of theirs).

By default (``search_alpha=True``) ``alpha`` is chosen per group from a grid by the output
error of the quantized group on a sample of calibration rows (same machinery as AWQ-lite; "no
smoothing" is one of the candidates): on SmolLM2-135M W8A8 this gives perplexity 21.2 where a
fixed ``alpha=0.5`` gives 25.3 (plain W8A8: 45.2). With ``search_alpha=False`` the fixed
``alpha`` (default 0.5, the SmoothQuant paper's) is used for every group.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from modeloptim.torch.trace.shared_group import SharedInputGroup

from .awq import _act_qdq, _alpha_grid, _apply_scale, _finish, _prepare
from .awq_search import awq_lite_search
from .quant_utils import qdq_fresh, weight_block_size
from .registry import AlgorithmConfig, ForwardLoop, calibration_algorithms
from .sharing import get_weight_2d
from .stats import GroupStats

__all__ = ["SmoothQuantConfig", "smooth_scale", "smoothquant"]


class SmoothQuantConfig(AlgorithmConfig):
    """``smoothquant`` options."""

    method: Literal["smoothquant"] = "smoothquant"
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="migration strength")
    search_alpha: bool = Field(default=True, description="choose alpha per group by output error")
    alpha_step: float = Field(default=0.1, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=16, description="rows sampled per group for the search")


def smooth_scale(act_amax: torch.Tensor, w_amax: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant factor ``a**alpha / w**(1-alpha)`` per channel (1 where a or w is 0)."""
    a = act_amax.float()
    w = w_amax.float()
    s = a.pow(alpha) / w.pow(1.0 - alpha).clamp_min(1e-12)
    ok = (a > 0) & (w > 0) & torch.isfinite(s)
    return torch.where(ok, s.clamp_min(1e-5), torch.ones_like(s))


def _weight_amax(group: SharedInputGroup) -> torch.Tensor:
    return torch.cat([get_weight_2d(m).float().abs() for m in group.modules]).amax(dim=0)


@torch.no_grad()
def _smooth_group(group: SharedInputGroup, st: GroupStats, cfg: SmoothQuantConfig) -> Any:
    w_amax = _weight_amax(group)
    act_amax = st.abs_max.to(w_amax.device)
    if not cfg.search_alpha:
        return cfg.alpha, _apply_scale(group, smooth_scale(act_amax, w_amax, cfg.alpha))
    res = awq_lite_search(
        st.rows.to(w_amax.device),
        act_amax,
        [get_weight_2d(m).float() for m in group.modules],
        [partial(qdq_fresh, m.weight_quantizer) for m in group.modules],
        _act_qdq(group, st),
        weight_block_size(group.modules[0].weight_quantizer),
        _alpha_grid(cfg.alpha_step),
        w_stat=w_amax,
    )
    if res.alpha is None:
        return None, "unchanged"
    return res.alpha, _apply_scale(group, res.scale)


@calibration_algorithms.register("smoothquant", SmoothQuantConfig, needs_forward_loop=True)
def smoothquant(model: nn.Module, forward_loop: ForwardLoop | None, config: Any) -> None:
    """SmoothQuant smoothing of every shared-input group, then max calibration."""
    cfg = config if isinstance(config, SmoothQuantConfig) else SmoothQuantConfig()
    rows = cfg.max_tokens if cfg.search_alpha else 0
    groups, stats = _prepare(model, forward_loop, "smoothquant", rows)
    for g, st in tqdm(
        list(zip(groups or [], stats or [], strict=True)), desc="smoothquant", leave=False
    ):
        _smooth_group(g, st, cfg)
    _finish(model, forward_loop, groups)
