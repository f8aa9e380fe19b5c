"""Channel layouts: which channels of which tensor dims are the same channel.

Every tensor dim seen by the analyzer is described by a :data:`Desc`: a list of segments
(concatenated along the dim), each segment a tuple of atoms multiplied row-major (the first
atom is the outermost). An atom is a union-find variable with a size; atoms that must keep
the same channels are unioned. An atom may later be *expanded* into a concatenation of parts
(``split``/``chunk`` of a Linear's output) or a product of factors (a ``view`` into heads), so
layouts discovered later refine, never contradict, earlier ones. Atoms that cannot change
size safely are *frozen* with human-readable reasons.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

Seg = tuple[int, ...]
Desc = list[Seg]

_MAX_REASONS = 6


class LayoutConflictError(Exception):
    """Two layouts of the same dim cannot be aligned (the caller freezes both)."""


@dataclass
class _Expansion:
    kind: str  # "cat" (parts are Descs) or "prod" (parts are single atoms)
    parts: list[Desc] = field(default_factory=list)


class AtomTable:
    """Union-find over channel atoms with expansions and freeze reasons."""

    def __init__(self) -> None:
        self.size: list[int] = []
        self._parent: list[int] = []
        self._expansion: dict[int, _Expansion] = {}
        self._reasons: dict[int, list[str]] = {}

    # -- atoms -------------------------------------------------------------------------------
    def new(self, size: int, reason: str | None = None) -> int:
        """Create an atom of ``size`` channels (frozen with ``reason`` if given)."""
        idx = len(self.size)
        self.size.append(int(size))
        self._parent.append(idx)
        if reason is not None:
            self._reasons[idx] = [reason]
        return idx

    def new_desc(self, size: int, reason: str | None = None) -> Desc:
        """A one-atom layout of ``size`` channels."""
        return [(self.new(size, reason),)]

    def find(self, a: int) -> int:
        """Root of atom ``a``."""
        parent = self._parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def expansion(self, a: int) -> _Expansion | None:
        """How atom ``a`` was refined (``None`` for a leaf atom)."""
        return self._expansion.get(self.find(a))

    def reasons(self, a: int) -> list[str]:
        """Why the leaf atom ``a`` is frozen (empty when it is free)."""
        return self._reasons.get(self.find(a), [])

    # -- freezing ----------------------------------------------------------------------------
    def freeze(self, desc: Desc, reason: str) -> None:
        """Freeze every leaf atom under ``desc`` with ``reason``."""
        for a in self.leaves(desc):
            if self.size[a] <= 1:
                continue
            lst = self._reasons.setdefault(a, [])
            if reason not in lst and len(lst) < _MAX_REASONS:
                lst.append(reason)

    def leaves(self, desc: Desc) -> list[int]:
        """Leaf atom roots under ``desc`` (with repetition removed, in order)."""
        out: list[int] = []
        stack = [a for seg in reversed(desc) for a in reversed(seg)]
        while stack:
            r = self.find(stack.pop())
            exp = self._expansion.get(r)
            if exp is None:
                if r not in out:
                    out.append(r)
            else:
                stack.extend(
                    a for part in reversed(exp.parts) for s in reversed(part) for a in reversed(s)
                )
        return out

    # -- expansion ---------------------------------------------------------------------------
    def _split_cat(self, r: int, sizes: list[int]) -> list[int]:
        parts = [self.new(s) for s in sizes]
        for p in parts:
            if r in self._reasons:
                self._reasons[p] = list(self._reasons[r])
        self._expansion[r] = _Expansion("cat", [[(p,)] for p in parts])
        return parts

    def _split_prod(self, r: int, sizes: list[int]) -> list[int]:
        parts = [self.new(s) for s in sizes]
        for p in parts:
            if r in self._reasons:
                self._reasons[p] = list(self._reasons[r])
        self._expansion[r] = _Expansion("prod", [[(p,)] for p in parts])
        return parts

    def normalize(self, desc: Desc) -> list[list[int]]:
        """Flatten ``desc`` into segments of leaf atoms (size-1 atoms dropped).

        Raises:
            LayoutConflictError: a concatenation sits inside a product (not a plain concat).
        """
        out: list[list[int]] = []
        for seg in desc:
            out.extend(self._normalize_seg(list(seg)))
        return out

    def _normalize_seg(self, factors: list[int]) -> list[list[int]]:
        flat: list[int] = []
        queue = list(factors)
        while queue:
            a = self.find(queue.pop(0))
            exp = self._expansion.get(a)
            if exp is None:
                if self.size[a] > 1:
                    flat.append(a)
            elif exp.kind == "prod":
                queue = [p[0][0] for p in exp.parts] + queue
            else:
                if flat:
                    raise LayoutConflictError("concatenated channels inside a product")
                res: list[list[int]] = []
                for part in exp.parts:
                    for seg in part:
                        res.extend(self._normalize_seg([*seg, *queue]))
                return res
        return [flat]

    @staticmethod
    def _seg_size(sizes: list[int], seg: list[int]) -> int:
        return math.prod(sizes[a] for a in seg)

    # -- unification -------------------------------------------------------------------------
    def unify(self, d1: Desc, d2: Desc) -> None:
        """Declare that ``d1`` and ``d2`` describe the same channels in the same order.

        Raises:
            LayoutConflictError: the layouts cannot be aligned.
        """
        for _ in range(64):
            n1, n2 = self.normalize(d1), self.normalize(d2)
            s1 = [self._seg_size(self.size, s) for s in n1]
            s2 = [self._seg_size(self.size, s) for s in n2]
            if sum(s1) != sum(s2):
                raise LayoutConflictError(f"sizes differ: {sum(s1)} vs {sum(s2)}")
            bounds = set(_cumsum(s1)) | set(_cumsum(s2))
            if self._cut_segments(n1, s1, bounds) or self._cut_segments(n2, s2, bounds):
                continue
            changed = False
            for f1, f2 in zip(n1, n2, strict=True):
                changed |= self._unify_products(f1, f2)
            if not changed:
                return
        raise LayoutConflictError("layouts did not converge")

    def _cut_segments(self, norm: list[list[int]], sizes: list[int], bounds: set[int]) -> bool:
        start = 0
        for seg, size in zip(norm, sizes, strict=True):
            cuts = sorted(b - start for b in bounds if start < b < start + size)
            start += size
            if not cuts:
                continue
            if not seg:
                raise LayoutConflictError("cannot cut a size-1 segment")
            inner = math.prod(self.size[a] for a in seg[1:])
            if any(c % inner for c in cuts):
                raise LayoutConflictError("concat boundary falls inside an inner factor")
            pts = [0, *(c // inner for c in cuts), self.size[seg[0]]]
            self._split_cat(seg[0], [b - a for a, b in itertools.pairwise(pts)])
            return True
        return False

    def _unify_products(self, f1: list[int], f2: list[int]) -> bool:
        """Align two row-major factor lists; split factors or union them. True if split."""
        st1, st2 = _strides(self.size, f1), _strides(self.size, f2)
        pts = set(st1) | set(st2)
        for factors, strides in ((f1, st1), (f2, st2)):
            for a, stride in zip(factors, strides, strict=True):
                inside = [p for p in pts if stride < p < stride * self.size[a]]
                if any(p % stride for p in inside):
                    raise LayoutConflictError("factor boundaries do not line up")
                inner = sorted(p // stride for p in inside)
                if inner:
                    sizes = []
                    prev = 1
                    for q in [*inner, self.size[a]]:
                        if q % prev:
                            raise LayoutConflictError("factor sizes do not divide")
                        sizes.append(q // prev)
                        prev = q
                    self._split_prod(a, sizes[::-1])
                    return True
        for a, b in zip(f1, f2, strict=True):
            self._union(a, b)
        return False

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            raise LayoutConflictError(f"atom sizes differ: {self.size[ra]} vs {self.size[rb]}")
        self._parent[rb] = ra
        rs = self._reasons.pop(rb, [])
        if rs:
            lst = self._reasons.setdefault(ra, [])
            lst.extend(r for r in rs if r not in lst and len(lst) < _MAX_REASONS)

    # -- splitting a layout (split/chunk/reshape) ---------------------------------------------
    def split(self, desc: Desc, sizes: list[int]) -> list[Desc]:
        """Cut ``desc`` into consecutive pieces of ``sizes`` channels (concat inverse)."""
        pieces: list[Desc] = [self.new_desc(s) for s in sizes]
        self.unify(desc, [s for p in pieces for s in p])
        return pieces

    def factor(self, desc: Desc, sizes: list[int]) -> list[Desc]:
        """View ``desc`` as a row-major product of dims of ``sizes`` (reshape inverse)."""
        parts = [self.new(s) for s in sizes]
        self.unify(desc, [tuple(parts)])
        return [[(p,)] for p in parts]

    # -- masks -------------------------------------------------------------------------------
    def keep_mask(self, desc: Desc, root: int, keep: torch.Tensor) -> torch.Tensor:
        """Boolean mask over the dim described by ``desc`` keeping ``keep`` of atom ``root``.

        Args:
            desc: layout of the dim.
            root: leaf atom whose channels are being pruned.
            keep: bool tensor of shape ``(size(root),)``.

        Returns:
            Bool tensor of shape ``(dim size,)``.
        """
        out = [self._seg_mask(seg, root, keep) for seg in desc]
        return torch.cat(out) if out else torch.ones(0, dtype=torch.bool)

    def _seg_mask(self, seg: Seg, root: int, keep: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(1, dtype=torch.bool)
        for a in seg:
            mask = (mask[:, None] & self._atom_mask(a, root, keep)[None, :]).reshape(-1)
        return mask

    def _atom_mask(self, a: int, root: int, keep: torch.Tensor) -> torch.Tensor:
        r = self.find(a)
        if r == root:
            return keep
        exp = self._expansion.get(r)
        if exp is None:
            return torch.ones(self.size[r], dtype=torch.bool)
        if exp.kind == "cat":
            return torch.cat([self.keep_mask(p, root, keep) for p in exp.parts])
        return self._seg_mask(tuple(p[0][0] for p in exp.parts), root, keep)

    def desc_size(self, desc: Desc) -> int:
        """Number of channels described by ``desc``."""
        return sum(math.prod(self.size[a] for a in seg) for seg in desc)


def _cumsum(sizes: list[int]) -> list[int]:
    out, acc = [], 0
    for s in sizes:
        acc += s
        out.append(acc)
    return out


def _strides(sizes: list[int], factors: list[int]) -> list[int]:
    """Row-major stride of each factor (product of the sizes to its right)."""
    out = []
    acc = 1
    for a in reversed(factors):
        out.append(acc)
        acc *= sizes[a]
    return out[::-1]
