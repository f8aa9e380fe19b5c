"""Which linear layers read the same tensor, and what produced it (architecture agnostic).

Scale-migrating algorithms (SmoothQuant, AWQ) must use one input scale for all layers that
read one tensor (q/k/v projections, gate/up, MoE experts, any fan-out), and can fold that
scale into the layer that produced the tensor (a norm, a linear) when nothing else reads it.
This module finds both from one real forward pass instead of from layer names:

- a forward pre-hook on every candidate layer records the identity of its input tensor
  (``data_ptr``, shape, strides, dtype; all recorded tensors are kept alive during the pass so
  memory cannot be reused by another tensor);
- a forward hook on every module records which module *produced* each output tensor (the
  innermost one);
- a :class:`~torch.overrides.TorchFunctionMode` records every tensor-producing torch op that
  reads a produced tensor and the module it ran in, so a producer is foldable only when all
  readers of its output are group members (metadata reads like ``.shape`` do not count).

This is the robust fallback the design allows in place of the FX dependency analysis: it sees
through any Python control flow and any module naming. Whether a fold is really exact is
still verified numerically when it is applied (see :func:`fold_scale_into_producer`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "LINEAR_LAYOUTS",
    "SharedInputGroup",
    "find_shared_input_groups",
    "fold_scale_into_producer",
    "get_weight_2d",
    "run_one_forward",
    "set_weight_2d",
]

_Key = tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype]


class _LayoutRegistry:
    """Per layer type: whether its weight is stored ``[out, in]`` (False) or ``[in, out]``."""

    def __init__(self) -> None:
        self._transposed: dict[type, bool] = {}

    def register(self, cls: type, transposed: bool = False) -> None:
        """Declare ``cls`` a linear layer (``y = x W^T + b`` with ``W`` ``[out, in]``)."""
        self._transposed[cls] = transposed

    def lookup(self, module: nn.Module) -> bool | None:
        """``transposed`` flag for ``module``'s class (or a base class); ``None``: not linear."""
        for cls in type(module).__mro__:
            if cls in self._transposed:
                return self._transposed[cls]
        return None


LINEAR_LAYOUTS = _LayoutRegistry()
LINEAR_LAYOUTS.register(nn.Linear)


def _register_hf_conv1d() -> None:
    """GPT-2 style ``Conv1D`` (weight ``[in, out]``), once transformers is already imported.

    A model made of transformers layers has imported it; other models never pay its import.
    """
    if "transformers" not in sys.modules:
        return
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # optional dependency
        return
    LINEAR_LAYOUTS.register(Conv1D, transposed=True)


def get_weight_2d(module: nn.Module) -> torch.Tensor:
    """The layer's weight as ``[out, in]`` (a view of the parameter's data)."""
    flag = LINEAR_LAYOUTS.lookup(module)
    if flag is None:
        _register_hf_conv1d()
        flag = LINEAR_LAYOUTS.lookup(module)
    if flag is None:
        raise TypeError(f"module: {type(module).__name__} is not a registered linear layer")
    weight: Any = module.weight
    return weight.data.T if flag else weight.data


def set_weight_2d(module: nn.Module, w: torch.Tensor) -> None:
    """Write an ``[out, in]`` weight back into the layer (in place, keeping dtype)."""
    weight: Any = module.weight
    get_weight_2d(module).copy_(w.to(weight.dtype))


def _key(t: torch.Tensor) -> _Key:
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


@dataclass
class SharedInputGroup:
    """Linear layers that read one tensor.

    Attributes:
        names: qualified names of the member layers, in first-call order.
        modules: the member layers.
        producer: name of the module whose output the tensor is, or ``None``.
        producer_module: that module (``None`` when unknown).
        exclusive: True when group members are the only readers of the producer's output
            and the producer ran once (so scaling its parameters affects only this tensor).
        in_features: width of the shared tensor.
        probe: the producer's input in the discovery pass (to verify a fold numerically).
    """

    names: list[str]
    modules: list[Any]
    producer: str | None = None
    producer_module: nn.Module | None = None
    exclusive: bool = False
    in_features: int = 0
    probe: torch.Tensor | None = field(default=None, repr=False)

    @property
    def foldable(self) -> bool:
        """A producer exists and nothing but the members reads its output."""
        return self.producer_module is not None and self.exclusive


class _StopForward(Exception):  # noqa: N818 - control flow, not an error
    pass


def run_one_forward(model: nn.Module, forward_loop: Callable[[nn.Module], Any]) -> None:
    """Run ``forward_loop`` only until the model's first forward call returns."""

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
    predicate: Callable[[str, nn.Module], bool] | None = None,
) -> list[SharedInputGroup]:
    """Group the model's linear layers by the tensor they read, with one forward pass.

    Args:
        model: any ``nn.Module``.
        forward_loop: calibration loop ``forward_loop(model)``; only its first model call runs.
        predicate: which ``(name, module)`` are candidate layers (default: registered linear
            layers, see :data:`LINEAR_LAYOUTS`).

    Returns:
        One :class:`SharedInputGroup` per distinct input tensor (singletons included), in
        the order the layers first ran. Layers that never ran are left out.
    """
    _register_hf_conv1d()
    pred = predicate or (lambda _n, m: LINEAR_LAYOUTS.lookup(m) is not None)
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
    for k, members in _merge_layers_read_twice(list(inputs.items())):
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
                in_features=get_weight_2d(modules[members[0]]).shape[1],
                probe=first_input.get(producer) if producer is not None else None,
            )
        )
    return groups


def _merge_layers_read_twice(
    items: list[tuple[_Key, list[str]]],
) -> list[tuple[_Key | None, list[str]]]:
    """Union groups that share a layer (a layer called on two tensors needs one scale).

    A merged group has no single input tensor (key ``None``), hence no producer to fold into.
    """
    out: list[tuple[_Key | None, list[str]]] = []
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


@torch.no_grad()
def fold_scale_into_producer(
    group: SharedInputGroup, inv_scale: torch.Tensor, probe: torch.Tensor | None = None
) -> bool:
    """Multiply the producer's output channels by ``inv_scale`` in its parameters, if exact.

    Supported producers: modules whose output is proportional per channel to a 1-D ``weight``
    (LayerNorm, RMSNorm of any library; plus a 1-D ``bias``) and linear layers (output rows).
    The fold is checked on ``probe`` (an input of the producer) when given: if the new output
    is not ``old * inv_scale`` (rtol 1e-5), it is undone.

    Args:
        group: a group with ``foldable`` True.
        inv_scale: ``[C]`` factor per output channel of the producer.
        probe: a sample input of the producer for the exactness check.

    Returns:
        True when folded; False (nothing changed) otherwise.
    """
    prod = group.producer_module
    if prod is None or not group.exclusive:
        return False
    probe = probe if probe is not None else group.probe
    params = _scalable_params(prod, inv_scale.numel())
    if not params:
        return False
    before = prod(probe) if probe is not None else None
    saved = [p.detach().clone() for p in params]
    for p in params:
        shape = [-1] + [1] * (p.dim() - 1)
        p.mul_(inv_scale.to(device=p.device, dtype=p.dtype).reshape(shape))
    if before is not None and isinstance(before, torch.Tensor):
        after = prod(probe)
        expect = before * inv_scale.to(device=before.device, dtype=before.dtype)
        if not torch.allclose(after, expect, rtol=1e-5, atol=1e-6 * float(expect.abs().max())):
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
            return False
    return True


def _scalable_params(module: nn.Module, channels: int) -> list[torch.Tensor]:
    """Parameters to scale so that output channel ``c`` is multiplied by ``inv_scale[c]``."""
    if LINEAR_LAYOUTS.lookup(module) is not None:
        w = get_weight_2d(module)
        if w.shape[0] != channels:
            return []
        out: list[torch.Tensor] = [w]
        bias: Any = getattr(module, "bias", None)
        if bias is not None:
            out.append(bias.data)
        return out
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or weight.numel() != channels:
        return []
    bias = getattr(module, "bias", None)
    params: list[torch.Tensor] = [weight.data]
    if isinstance(bias, torch.Tensor):
        if bias.dim() != 1 or bias.numel() != channels:
            return []
        params.append(bias.data)
    return params


def layers_in(groups: Iterable[SharedInputGroup]) -> list[str]:
    """All member layer names of ``groups``."""
    return [n for g in groups for n in g.names]
