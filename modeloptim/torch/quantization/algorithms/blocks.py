"""Find a model's repeated blocks (decoder layers) and replay them on cached inputs.

Sequential calibration (GPTQ) processes a model block by block: it needs the inputs of the
first block, and then runs each block on its own, feeding the block's output to the next one.
This module finds the blocks without relying on names and records what they are called with:

- :func:`find_block_list`: the ``nn.ModuleList`` whose items all have one type and that holds
  the most quantized layers (ties: the longest) — the decoder layers of a transformer;
- :class:`BlockInputCapture`: forward pre-hooks (with keyword arguments: HF passes
  ``position_embeddings``, ``attention_mask``, cache objects as keywords) that record, during
  one run of the user's forward loop, the hidden state entering block 0 and the other
  arguments of every block call, and check that the blocks form a chain (block ``k + 1`` reads
  exactly what block ``k`` returned);
- :class:`BlockReplayer`: runs block ``k`` on the cached calls, with the hidden state produced
  by the (already quantized) block ``k - 1``.

Assumption (checked where cheap): a block's arguments other than the hidden state do not
depend on the earlier blocks (true for rotary embeddings, masks, position ids). KV-cache
objects in the arguments are replaced by ``None`` on replay, so replaying a block twice does
not append to a cache; calibration calls with an already filled cache are refused (their
attention would read keys the replay cannot reproduce).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "BlockCall",
    "BlockInputCapture",
    "BlockList",
    "BlockReplayer",
    "StopBlock",
    "find_block_list",
]


class StopBlock(Exception):  # noqa: N818  (a control-flow signal, not an error)
    """Raised by a hook to end one replayed block call early (its output is not needed)."""


@dataclass(frozen=True)
class BlockList:
    """The model's repeated blocks: ``name`` of the ``nn.ModuleList`` and its items."""

    name: str
    blocks: tuple[nn.Module, ...]

    def index_of(self, module: nn.Module) -> int | None:
        """Index of the block that contains ``module`` (``None``: outside every block)."""
        for i, b in enumerate(self.blocks):
            if any(m is module for m in b.modules()):
                return i
        return None


def find_block_list(model: nn.Module, layers: Iterable[nn.Module]) -> BlockList | str:
    """The ``nn.ModuleList`` of same-type modules that holds the most of ``layers``.

    Args:
        model: the model.
        layers: the quantized layers that sequential calibration will process.

    Returns:
        The :class:`BlockList`, or a string saying why there is none.
    """
    wanted = {id(m) for m in layers}
    best: tuple[int, int, str, nn.ModuleList] | None = None
    for name, ml in model.named_modules():
        if not isinstance(ml, nn.ModuleList) or len(ml) == 0:
            continue
        if len({type(b) for b in ml}) != 1:
            continue
        held = sum(1 for b in ml for m in b.modules() if id(m) in wanted)
        if held == 0:
            continue
        key = (held, len(ml))
        if best is None or key > best[:2]:
            best = (held, len(ml), name, ml)
    if best is None:
        return "no nn.ModuleList of same-type modules holds a quantized layer"
    return BlockList(best[2], tuple(best[3]))


def _is_kv_cache(v: Any) -> bool:
    # Duck-typed so that no transformers import is needed: HF Cache objects have both.
    return callable(getattr(v, "update", None)) and callable(getattr(v, "get_seq_length", None))


def _hidden_slot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | str | None:
    """Where the hidden state is: the first tensor argument (position, else keyword)."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            return i
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            return k
    return None


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (
        a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
    )


@dataclass
class BlockCall:
    """One recorded call of a block: its arguments and where the hidden state goes."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    slot: int | str

    def with_hidden(self, hidden: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's ``(args, kwargs)`` with ``hidden`` as the hidden state."""
        args, kwargs = list(self.args), dict(self.kwargs)
        if isinstance(self.slot, int):
            args[self.slot] = hidden
        else:
            kwargs[self.slot] = hidden
        return tuple(args), kwargs


@dataclass
class BlockInputCapture:
    """Records the calls of every block during one forward loop (see the module docstring).

    Use as a context manager around the user's forward loop; then :attr:`problem` is ``None``
    when the recorded calls can be replayed, else the reason they cannot.
    """

    blocks: BlockList
    calls: list[list[BlockCall]] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)
    problem: str | None = None
    _last_out: list[torch.Tensor | None] = field(default_factory=list)
    _handles: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.blocks.blocks)
        self.calls = [[] for _ in range(n)]
        self._last_out = [None] * n

    def _fail(self, why: str) -> None:
        if self.problem is None:
            self.problem = why

    def _pre(self, k: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        slot = _hidden_slot(args, kwargs)
        if slot is None:
            self._fail(f"block {k} was called without a tensor argument")
            return
        h = args[slot] if isinstance(slot, int) else kwargs[slot]
        assert isinstance(h, torch.Tensor)
        caches = [v for v in (*args, *kwargs.values()) if _is_kv_cache(v)]
        if k == 0:
            if any(int(c.get_seq_length()) > 0 for c in caches):
                self._fail("a calibration call passed an already filled KV cache")
            self.hidden.append(h.detach())
        else:
            prev = self._last_out[k - 1]
            if prev is None or not _same_tensor(prev, h):
                self._fail(
                    f"block {k} does not read the output of block {k - 1} (the blocks of "
                    f"{self.blocks.name!r} are not one chain)"
                )
        if len(self.calls[k]) != len(self.calls[0]) - (0 if k == 0 else 1):
            self._fail(f"block {k} was called a different number of times than block 0")
        args = tuple(None if (i == slot or _is_kv_cache(a)) else a for i, a in enumerate(args))
        kwargs = {n: None if (n == slot or _is_kv_cache(v)) else v for n, v in kwargs.items()}
        self.calls[k].append(BlockCall(args, kwargs, slot))

    def _post(self, k: int, out: Any) -> None:
        t = _first_tensor(out)
        if t is None:
            self._fail(f"block {k} returned neither a tensor nor a tuple starting with one")
        self._last_out[k] = t

    def __enter__(self) -> BlockInputCapture:
        for k, b in enumerate(self.blocks.blocks):
            self._handles.append(
                b.register_forward_pre_hook(
                    lambda _m, a, kw, k=k: self._pre(k, a, kw), with_kwargs=True
                )
            )
            self._handles.append(b.register_forward_hook(lambda _m, _a, o, k=k: self._post(k, o)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._last_out = [None] * len(self.blocks.blocks)  # do not keep activations alive
        if self.problem is None:
            if not self.hidden:
                self.problem = "the forward loop never called the first block"
            elif any(len(c) != len(self.hidden) for c in self.calls):
                self.problem = "the blocks were not all called once per call of block 0"


class BlockReplayer:
    """Runs the blocks one at a time on the captured calls.

    Args:
        capture: a finished :class:`BlockInputCapture` with ``problem is None``.
    """

    def __init__(self, capture: BlockInputCapture) -> None:
        if capture.problem is not None:
            raise ValueError(f"capture: cannot replay: {capture.problem}")
        self.blocks = capture.blocks
        self.calls = capture.calls
        self.hidden: list[torch.Tensor] = list(capture.hidden)
        self.block_index = 0

    def __len__(self) -> int:
        """Number of blocks."""
        return len(self.blocks.blocks)

    def _run(self, k: int) -> Iterator[Any]:
        block = self.blocks.blocks[k]
        for call, h in zip(self.calls[k], self.hidden, strict=True):
            args, kwargs = call.with_hidden(h)
            yield block(*args, **kwargs)

    @torch.no_grad()
    def run_block(self, k: int, on_output: Callable[[Any], None] | None = None) -> None:
        """Run block ``k`` on its inputs (e.g. to let hooks collect statistics).

        A hook may raise :class:`StopBlock` to skip the rest of one call (``on_output`` is
        then not called for it).
        """
        self._check(k)
        block = self.blocks.blocks[k]
        for call, h in zip(self.calls[k], self.hidden, strict=True):
            args, kwargs = call.with_hidden(h)
            try:
                out = block(*args, **kwargs)
            except StopBlock:
                continue
            if on_output is not None:
                on_output(out)

    @torch.no_grad()
    def advance(self, k: int) -> None:
        """Run block ``k`` and make its outputs the inputs of block ``k + 1``."""
        self._check(k)
        outs = []
        for out in self._run(k):
            t = _first_tensor(out)
            assert t is not None  # checked during capture
            outs.append(t.detach())
        self.hidden = outs
        self.calls[k] = []  # block k is done: free its recorded arguments
        self.block_index = k + 1

    def _check(self, k: int) -> None:
        if k != self.block_index:
            raise RuntimeError(
                f"k: blocks are replayed in order; the next block is {self.block_index}, got {k}"
            )
