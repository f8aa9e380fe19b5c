"""GPTQ: Hessian-aware sequential rounding of a weight matrix (pure tensor math).

For a linear layer ``y = x @ W.T`` with calibration inputs ``X`` (``[n, in]``), GPTQ rounds
``W`` one input column at a time and spreads each column's rounding error onto the columns
not yet rounded, weighted by the inverse Hessian ``H = 2 X^T X / n`` (the OBS update). The
upper Cholesky factor of ``H^-1`` gives every step's update row at once, and updates are
applied lazily in column blocks (one matmul per block instead of one rank-1 update per
column).

Group awareness: a :class:`ColumnQuantizer` fixes the scale of a group of columns (a block
of the weight quantizer) when its first column is rounded, from the group's *current*
(error-updated) values; later columns of the group reuse that scale. Groups are visited in
order and lie inside one lazy block, so the result equals the straightforward, fully updated
algorithm exactly (tested against a float64 reference). With ``act_order`` the columns of a
group are visited far apart, and a scale fixed from partly updated values clips the columns
that drift later; there the group scales come from the original weights ("static groups",
as AutoGPTQ does), which keeps the weight quantizer's block layout.
"""

from __future__ import annotations

import math
import warnings
from typing import Protocol

import torch

__all__ = ["ColumnQuantizer", "HessianAccumulator", "gptq_quantize", "prepare_inverse_hessian"]


class ColumnQuantizer(Protocol):
    """Rounds weight columns the way the layer's weight quantizer would.

    ``group_size`` columns (aligned at multiples of it) share one scale per row; 0 means a
    scale that does not depend on the columns (per-tensor / per-output-channel).
    """

    group_size: int

    def start_group(self, w_group: torch.Tensor, index: int) -> None:
        """Set the scale of group ``index`` from its values ``w_group`` ``[rows, g]``."""

    def quantize(self, col: torch.Tensor) -> torch.Tensor:
        """Fake-quantize one column ``[rows]`` with the current group's scale (float32)."""


class HessianAccumulator:
    """Running ``H = 2/n * sum x x^T`` over calibration inputs of one layer.

    Args:
        in_features: width of the layer input (last dim of ``x``).
        device: where ``H`` lives.
        dtype: accumulation dtype (float32 keeps big models' Hessians in memory; per-batch
            products are summed, so rounding stays at float32 epsilon level).
    """

    def __init__(
        self,
        in_features: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.sum_xxt = torch.zeros(in_features, in_features, dtype=dtype, device=device)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of inputs ``x`` ``[..., in_features]``."""
        if self.count == 0 and self.sum_xxt.device != x.device:
            self.sum_xxt = self.sum_xxt.to(x.device)  # accumulate where the data is (GPU)
        x2 = x.detach().reshape(-1, x.shape[-1]).to(self.sum_xxt.device, torch.float32)
        self.sum_xxt += (x2.T @ x2).to(self.sum_xxt.dtype)
        self.count += x2.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        """``2 X^T X / n`` in float32 ``[in, in]`` (raises if no input was seen)."""
        if self.count == 0:
            raise RuntimeError("gptq: the layer saw no calibration input (forward_loop ran?)")
        return (2.0 * self.sum_xxt / self.count).float()


def prepare_inverse_hessian(
    h: torch.Tensor, percdamp: float = 0.01, max_tries: int = 6
) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp I)^-1`` with ``damp = percdamp * mean(diag H)``.

    If the damped Hessian is still not positive definite (too little calibration data for a
    wide layer), the damping is multiplied by 10 up to ``max_tries`` times with a warning;
    after that a ``ValueError`` explains what to do.

    Args:
        h: ``[in, in]`` Hessian (dead columns, zero diagonal, should already be set to 1).
        percdamp: relative damping, > 0.
        max_tries: damping escalations before giving up.

    Returns:
        ``U`` ``[in, in]`` upper triangular with ``U^T U = (H + damp I)^-1``.
    """
    if not percdamp > 0:
        raise ValueError(f"percdamp: expected a positive float, got {percdamp!r}")
    h = h.double()
    mean_diag = float(torch.diagonal(h).mean())
    damp = percdamp * (mean_diag if mean_diag > 0 else 1.0)
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    for attempt in range(max_tries):
        chol, info = torch.linalg.cholesky_ex(h + damp * eye)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(hinv, upper=True)
            if int(info) == 0:
                if attempt:
                    warnings.warn(
                        f"gptq: Hessian needed damping {damp:.3g} (percdamp x{10**attempt}); "
                        "use more calibration tokens for a better result",
                        stacklevel=2,
                    )
                return upper.float()
        damp *= 10.0
    raise ValueError(
        "gptq: the Hessian is not positive definite even with strong damping; "
        "use more calibration data or a larger percdamp"
    )


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    column_quantizer: ColumnQuantizer,
    block_size: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
) -> torch.Tensor:
    """Round ``weight`` with GPTQ.

    Args:
        weight: ``[out, in]`` float weight (not modified).
        hessian: ``[in, in]`` ``2 X^T X / n`` of the layer's inputs.
        column_quantizer: the weight format's column rounding (see :class:`ColumnQuantizer`).
        block_size: lazy-update block width; rounded up to a multiple of the group size.
        percdamp: relative diagonal damping.
        act_order: round columns in order of decreasing ``diag(H)`` (activation order).

    Returns:
        The fake-quantized weight ``[out, in]`` in ``weight``'s dtype.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a 2-D [out, in] tensor, got {tuple(weight.shape)}")
    cols = weight.shape[1]
    if hessian.shape != (cols, cols):
        raise ValueError(f"hessian: expected shape {(cols, cols)}, got {tuple(hessian.shape)}")
    w = weight.detach().float().clone()
    h = hessian.detach().float().to(w.device).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    gs = column_quantizer.group_size
    if gs > 0:
        block_size = max(gs, math.ceil(block_size / gs) * gs)
    perm = torch.argsort(torch.diagonal(h), descending=True) if act_order else None
    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    u = prepare_inverse_hessian(h, percdamp)

    q = torch.zeros_like(w)
    orig_w = weight.detach().float()
    orig_index = perm.tolist() if perm is not None else list(range(cols))
    current_group = -1
    if gs == 0:
        column_quantizer.start_group(w, 0)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            g = orig_index[i1 + i] // gs if gs else 0
            if g != current_group:
                if perm is not None:  # static groups (see module docstring)
                    column_quantizer.start_group(orig_w[:, g * gs : (g + 1) * gs], g)
                else:  # in order: the group starts here, its columns are up to date in w1
                    column_quantizer.start_group(w1[:, i : i + gs], g)
                current_group = g
            col = w1[:, i]
            qc = column_quantizer.quantize(col)
            q[:, i1 + i] = qc
            e = (col - qc) / u1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    if perm is not None:
        q = q[:, torch.argsort(perm)]
    return q.to(weight.dtype)
