"""Runtime fallback finder: which linear layers read the same tensor, from one real forward.

Used by `shared_input_groups` for the parts of a model that torch.fx cannot trace (and
kept as an independent second algorithm to check the graph finder against):

- a forward pre-hook on every candidate layer records the identity of its input tensor
  (``data_ptr``, shape, strides, dtype; all recorded tensors are kept alive during the pass so
  memory cannot be reused by another tensor);
- a forward hook on every module records which module *produced* each output tensor (the
  innermost one);
- a :class:`~torch.overrides.TorchFunctionMode` records every tensor-producing torch op that
  reads a produced tensor and the module it ran in, so a producer is foldable only when all
  readers of its output are group members (metadata reads like ``.shape`` do not count).

It sees through any Python control flow, but not through views that change the shape
(``x.view(-1, d)``, ``x[idx]``): those are new tensors to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from modeloptim.torch.trace.linear_layouts import LINEAR_LAYOUTS, in_features, register_hf_conv1d
from modeloptim.torch.trace.shared_group import GroupSource, SharedInputGroup

__all__ = ["find_shared_input_groups", "run_one_forward"]

_Key = tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype]
Predicate = Callable[[str, nn.Module], bool]


def _key(t: torch.Tensor) -> _Key:
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


def default_predicate(_name: str, module: nn.Module) -> bool:
    """Registered linear layers (see `LINEAR_LAYOUTS`)."""
    return LINEAR_LAYOUTS.lookup(module) is not None


class _StopForward(Exception):  # noqa: N818 - control flow, not an error
    pass


def run_one_forward(model: nn.Module, forward_loop: Callable[[nn.Module], Any]) -> None:
    """Run ``forward_loop`` only until the model's first forward call returns.

    Raises:
        ValueError: ``forward_loop`` returned without calling the model.
    """

    def stop(_m: nn.Module, _a: Any, _o: Any) -> None:
        raise _StopForward

    handle = model.register_forward_hook(stop)
    try:
        forward_loop(model)
    except _StopForward:
        return
    finally:
        handle.remove()
    raise ValueError("forward_loop: it never called the model")


class _ReadRecorder(TorchFunctionMode):
    """Records (module, op) pairs that read a produced tensor and make a new tensor."""

    def __init__(self, produced: dict[_Key, str], stack: list[str]) -> None:
        super().__init__()
        self.produced = produced
        self.stack = stack
        self.readers: dict[_Key, set[str]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_out, _ = tree_flatten(out)
        if not any(isinstance(o, torch.Tensor) for o in flat_out):
            return out  # metadata read (.shape, .dim(), ...)
        flat_in, _ = tree_flatten((args, kwargs))
        for t in flat_in:
            if isinstance(t, torch.Tensor) and not any(o is t for o in flat_out):
                k = _key(t)
                if k in self.produced:
                    where = self.stack[-1] if self.stack else ""
                    self.readers.setdefault(k, set()).add(where)
        return out


def find_shared_input_groups(
    model: nn.Module,
    forward_loop: Callable[[nn.Module], Any],
    predicate: Predicate | None = None,
) -> list[SharedInputGroup]:
    """Group the model's linear layers by the tensor they read, with one forward pass.

    Args:
        model: any ``nn.Module``.
        forward_loop: calibration loop ``forward_loop(model)``; only its first model call runs.
        predicate: which ``(name, module)`` are candidate layers (default: registered linear
            layers, see `LINEAR_LAYOUTS`).

    Returns:
        One `SharedInputGroup` per distinct input tensor (singletons included), in the order
        the layers first ran, each with ``source == "runtime"``. Layers that never ran are
        left out.
    """
    register_hf_conv1d()
    pred = predicate or default_predicate
    candidates = {m: n for n, m in model.named_modules() if pred(n, m)}
    names = {m: n for n, m in model.named_modules()}
    keep_alive: list[torch.Tensor] = []
    inputs: dict[_Key, list[str]] = {}
    produced: dict[_Key, str] = {}
    stack: list[str] = []
    calls: dict[str, int] = {}
    first_input: dict[str, torch.Tensor] = {}
    handles = []

    def pre(m: nn.Module, args: tuple[Any, ...]) -> None:
        stack.append(names[m])
        calls[names[m]] = calls.get(names[m], 0) + 1
        if args and isinstance(args[0], torch.Tensor):
            first_input.setdefault(names[m], args[0])
        if m in candidates and args and isinstance(args[0], torch.Tensor):
            x = args[0]
            keep_alive.append(x)
            members = inputs.setdefault(_key(x), [])
            if candidates[m] not in members:
                members.append(candidates[m])

    def post(m: nn.Module, _a: Any, out: Any) -> None:
        stack.pop()
        if isinstance(out, torch.Tensor):
            keep_alive.append(out)
            produced.setdefault(_key(out), names[m])

    for m in names:
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    recorder = _ReadRecorder(produced, stack)
    try:
        with torch.no_grad(), recorder:
            run_one_forward(model, forward_loop)
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    groups = []
    for k, members in merge_layers_read_twice(list(inputs.items())):
        producer = produced.get(k) if k is not None else None
        readers = recorder.readers.get(k, set()) if k is not None else set()
        exclusive = (
            producer is not None
            and producer not in members
            and calls.get(producer, 0) == 1
            and all(any(_within(r, mem) for mem in members) for r in readers)
        )
        groups.append(
            SharedInputGroup(
                names=list(members),
                modules=[modules[n] for n in members],
                producer=producer,
                producer_module=modules.get(producer) if producer is not None else None,
                exclusive=exclusive,
                in_features=in_features(modules[members[0]]),
                probe=first_input.get(producer) if producer is not None else None,
                source=GroupSource.RUNTIME,
            )
        )
    return groups


def merge_layers_read_twice(items: list[tuple[Any, list[str]]]) -> list[tuple[Any, list[str]]]:
    """Union groups that share a layer (a layer called on two tensors needs one scale).

    A merged group has no single input tensor (key ``None``), hence no producer to fold into.
    """
    out: list[tuple[Any, list[str]]] = []
    for k, members in items:
        hit = [i for i, (_, m) in enumerate(out) if set(m) & set(members)]
        if not hit:
            out.append((k, list(members)))
            continue
        merged = [n for i in hit for n in out[i][1]]
        merged += [n for n in members if n not in merged]
        for i in reversed(hit):
            del out[i]
        out.insert(hit[0], (None, merged))
    return out


def _within(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")
