"""Granularity: which elements share one ``amax`` (one scale).

A granularity turns the input into a *working view* in which the amax broadcasts:

- :class:`PerTensor`: the view is the tensor itself; amax is a 0-d tensor.
- :class:`PerChannel`: the view is the tensor itself; amax keeps the ``axis`` dims and has
  size 1 elsewhere (e.g. weight ``[out, in]`` with ``axis=0`` -> amax ``[out, 1]``).
- :class:`Blocked`: the tensor is zero-padded so that each blocked dim is a multiple of its
  block size, then viewed as ``[num_blocks, block_numel]``; amax is ``[num_blocks, 1]``.
  Blocks are ordered row-major over the remaining (outer) dims. Zero padding never changes a
  block's amax, and the padding is sliced off again on the way back.

``dynamic=True`` means the amax is recomputed from each input instead of being calibrated.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

__all__ = ["Blocked", "Granularity", "PerChannel", "PerTensor", "Restore"]

Restore = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class Granularity(ABC):
    """Base class: maps a tensor to a view where the stored amax broadcasts."""

    dynamic: bool

    @abstractmethod
    def to_view(self, x: torch.Tensor) -> tuple[torch.Tensor, Restore]:
        """Return ``(view, restore)``; ``restore(view_like)`` gives back ``x``'s shape."""

    @abstractmethod
    def reduce_amax(self, view: torch.Tensor) -> torch.Tensor:
        """Absolute maximum of ``view`` in the stored amax shape (float32)."""

    @abstractmethod
    def amax_for_view(self, amax: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Validate a stored ``amax`` and reshape it (float32) to broadcast against ``view``."""

    @abstractmethod
    def describe(self) -> str:
        """Short human-readable label, e.g. ``per-channel(axis=0)`` or ``block16``."""

    def reduce_sum(self, t_view: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        """Sum ``t_view`` over the elements that share each amax; result has ``amax.shape``."""
        amax_v = self.amax_for_view(amax, t_view)
        dims = [d for d in range(t_view.ndim) if amax_v.ndim == 0 or amax_v.shape[d] == 1]
        out = t_view.sum(dim=dims, keepdim=True) if dims else t_view
        return out.reshape(amax.shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.describe()))


class PerTensor(Granularity):
    """One amax for the whole tensor."""

    def __init__(self, dynamic: bool = False) -> None:
        self.dynamic = dynamic

    def to_view(self, x: torch.Tensor) -> tuple[torch.Tensor, Restore]:  # noqa: D102
        return x, _identity

    def reduce_amax(self, view: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return view.abs().amax().float()

    def amax_for_view(self, amax: torch.Tensor, view: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if amax.numel() != 1:
            raise ValueError(
                f"amax: per-tensor quantization expects one value, got shape {tuple(amax.shape)}"
            )
        return amax.reshape(()).to(device=view.device, dtype=torch.float32)

    def describe(self) -> str:  # noqa: D102
        return "per-tensor" + (" dynamic" if self.dynamic else "")


class PerChannel(Granularity):
    """One amax per index of the ``axis`` dim(s) (negative dims allowed)."""

    def __init__(self, axis: int | tuple[int, ...], dynamic: bool = False) -> None:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        if not axes or not all(isinstance(a, int) for a in axes):
            raise ValueError(f"axis: expected an int or a non-empty tuple of ints, got {axis!r}")
        self.axis = axes
        self.dynamic = dynamic

    def _norm_axes(self, ndim: int) -> tuple[int, ...]:
        out = []
        for a in self.axis:
            if not -ndim <= a < ndim:
                raise ValueError(f"axis: {a} is out of range for a tensor with {ndim} dims")
            out.append(a % ndim)
        if len(set(out)) != len(out):
            raise ValueError(f"axis: repeated dims in {self.axis}")
        return tuple(out)

    def to_view(self, x: torch.Tensor) -> tuple[torch.Tensor, Restore]:  # noqa: D102
        return x, _identity

    def reduce_amax(self, view: torch.Tensor) -> torch.Tensor:  # noqa: D102
        keep = self._norm_axes(view.ndim)
        dims = [d for d in range(view.ndim) if d not in keep]
        a = view.abs()
        return (a.amax(dim=dims, keepdim=True) if dims else a).float()

    def amax_for_view(self, amax: torch.Tensor, view: torch.Tensor) -> torch.Tensor:  # noqa: D102
        keep = self._norm_axes(view.ndim)
        shape = [view.shape[d] if d in keep else 1 for d in range(view.ndim)]
        if amax.numel() != math.prod(shape):
            raise ValueError(
                f"amax: shape {tuple(amax.shape)} does not match per-channel axis {self.axis} "
                f"of an input of shape {tuple(view.shape)} (expected {tuple(shape)})"
            )
        return amax.reshape(shape).to(device=view.device, dtype=torch.float32)

    def describe(self) -> str:  # noqa: D102
        ax = self.axis[0] if len(self.axis) == 1 else self.axis
        return f"per-channel(axis={ax})" + (" dynamic" if self.dynamic else "")


class Blocked(Granularity):
    """One amax per block; ``block_sizes`` maps dims (negative allowed) to block lengths.

    A length of ``None`` spans the whole dim (ModelOpt's ``{-1: None}``: one scale per
    token/row).
    """

    def __init__(self, block_sizes: Mapping[int, int | None], dynamic: bool = False) -> None:
        if not block_sizes:
            raise ValueError("block_sizes: expected at least one {dim: size} entry")
        for d, b in block_sizes.items():
            if not isinstance(d, int) or isinstance(d, bool):
                raise ValueError(f"block_sizes: dim keys must be ints, got {d!r}")
            if b is not None and (not isinstance(b, int) or isinstance(b, bool) or b <= 0):
                raise ValueError(
                    f"block_sizes: size for dim {d} must be a positive int or None, got {b!r}"
                )
        self.block_sizes = dict(sorted(block_sizes.items()))
        self.dynamic = dynamic
        sizes = list(self.block_sizes.values())
        #: elements per block (``None`` when a block spans a whole dim of unknown size)
        self.block_numel: int | None = (
            None if None in sizes else math.prod(b for b in sizes if b is not None)
        )

    def _norm(self, shape: tuple[int, ...] | torch.Size) -> dict[int, int]:
        ndim = len(shape)
        out: dict[int, int] = {}
        for d, b in self.block_sizes.items():
            if not -ndim <= d < ndim:
                raise ValueError(
                    f"block_sizes: dim {d} is out of range for a tensor with {ndim} dims"
                )
            if d % ndim in out:
                raise ValueError(f"block_sizes: dim {d} given twice")
            out[d % ndim] = shape[d % ndim] if b is None else b
        return out

    def num_blocks(self, shape: torch.Size | tuple[int, ...]) -> int:
        """Number of blocks an input of ``shape`` has (after padding)."""
        dims = self._norm(tuple(shape))
        return math.prod(-(-s // dims[d]) if d in dims else s for d, s in enumerate(shape))

    def to_view(self, x: torch.Tensor) -> tuple[torch.Tensor, Restore]:  # noqa: D102
        shape = tuple(x.shape)
        dims = self._norm(shape)
        numel = math.prod(list(dims.values()))  # a list: dynamo cannot trace prod(dict view)
        pads = [(-shape[d]) % b for d, b in dims.items()]
        last = x.ndim - 1
        if list(dims) == [last] and pads == [0]:
            # Fast path (the common one): blocks along the last dim, no padding, no copy.
            return x.reshape(-1, dims[last]), lambda t: t.reshape(shape)
        pad_arg: list[int] = []
        for d in reversed(range(x.ndim)):
            pad_arg += [0, (-shape[d]) % dims[d] if d in dims else 0]
        padded = F.pad(x, pad_arg) if any(pads) else x
        pshape = tuple(padded.shape)
        split: list[int] = []
        outer: list[int] = []
        inner: list[int] = []
        for d, s in enumerate(pshape):
            if d in dims:
                split += [s // dims[d], dims[d]]
                outer.append(len(split) - 2)
                inner.append(len(split) - 1)
            else:
                split.append(s)
                outer.append(len(split) - 1)
        perm = outer + inner
        inv = [perm.index(i) for i in range(len(perm))]
        permuted_shape = [split[i] for i in perm]
        view = padded.reshape(split).permute(perm).reshape(-1, numel)
        crop = tuple(slice(0, s) for s in shape)

        def restore(t: torch.Tensor) -> torch.Tensor:
            out = t.reshape(permuted_shape).permute(inv).reshape(pshape)
            return out[crop] if any(pads) else out

        return view, restore

    def reduce_amax(self, view: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return view.abs().amax(dim=-1, keepdim=True).float()

    def amax_for_view(self, amax: torch.Tensor, view: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if amax.numel() != view.shape[0]:
            raise ValueError(
                f"amax: {amax.numel()} values do not match the {view.shape[0]} blocks of "
                f"block_sizes {self.block_sizes}"
            )
        return amax.reshape(-1, 1).to(device=view.device, dtype=torch.float32)

    def describe(self) -> str:  # noqa: D102
        def size(b: int | None) -> str:
            return "all" if b is None else str(b)

        if self.block_sizes == {-1: None}:
            label = "per-token"
        elif list(self.block_sizes) == [-1]:
            label = f"block{size(self.block_sizes[-1])}"
        else:
            label = "block" + "x".join(f"{size(b)}@{d}" for d, b in self.block_sizes.items())
        return label + (" dynamic" if self.dynamic else "")
