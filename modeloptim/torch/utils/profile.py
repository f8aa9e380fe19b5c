"""FLOPs and parameter counting of a (sub)net.

FLOPs are counted at the ATen level while the model runs one forward (a dispatch mode sees
every matmul and convolution, including the ones written as ``x @ w`` in a model's code, which
module hooks miss). Only multiply-accumulates of matmuls, convolutions and fused attention are
counted, two FLOPs each; elementwise ops, norms, softmax and bias adds are ignored (they are a
few percent of a CNN's or transformer's work and do not change with channel counts the way the
products do). Rules are registered per ATen op in ``FLOP_RULES`` (the extension point).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "FLOP_RULES",
    "FlopCounter",
    "call_model",
    "count_flops",
    "count_params",
    "profile_model",
    "to_meta",
]

FlopRule = Callable[[Sequence[Any], Any], int]


class FlopRuleRegistry:
    """``aten op overload packet -> rule(args, out) -> FLOPs``."""

    def __init__(self) -> None:
        self._rules: dict[Any, FlopRule] = {}

    def register(self, *ops: Any) -> Callable[[FlopRule], FlopRule]:
        """Decorator registering ``rule`` for the given ``torch.ops.aten.*`` packets."""

        def wrap(rule: FlopRule) -> FlopRule:
            for op in ops:
                self._rules[op] = rule
            return rule

        return wrap

    def get(self, op: Any) -> FlopRule | None:
        """The rule of ``op`` (an overload or its packet), or ``None``."""
        return self._rules.get(getattr(op, "overloadpacket", op))


FLOP_RULES = FlopRuleRegistry()
aten = torch.ops.aten


@FLOP_RULES.register(aten.mm, aten.addmm)
def _mm(args: Sequence[Any], out: Any) -> int:
    a = args[-2]  # (m, k); addmm's first arg is the bias
    return 2 * a.shape[0] * a.shape[1] * out.shape[1]


@FLOP_RULES.register(aten.bmm, aten.baddbmm)
def _bmm(args: Sequence[Any], out: Any) -> int:
    a = args[-2]  # (b, m, k)
    return 2 * a.shape[0] * a.shape[1] * a.shape[2] * out.shape[2]


@FLOP_RULES.register(aten.convolution, aten._convolution)
def _conv(args: Sequence[Any], out: Any) -> int:
    x, w, transposed = args[0], args[1], bool(args[6])
    kernel = math.prod(w.shape[2:])
    if transposed:  # weight (C_in, C_out / groups, k...): every input element feeds C_out/g * k
        return 2 * x.numel() * w.shape[1] * kernel
    return 2 * out.numel() * w.shape[1] * kernel  # weight (C_out, C_in / groups, k...)


@FLOP_RULES.register(
    aten._scaled_dot_product_flash_attention_for_cpu,
    aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_flash_attention,
    aten._scaled_dot_product_cudnn_attention,
    aten.scaled_dot_product_attention,
)
def _sdpa(args: Sequence[Any], out: Any) -> int:
    q, k, v = args[0], args[1], args[2]  # (..., L, E), (..., S, E), (..., S, Ev)
    batch = math.prod(q.shape[:-2])
    return 2 * batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


class FlopCounter(TorchDispatchMode):
    """Dispatch mode accumulating FLOPs of the ops in ``FLOP_RULES``.

    Attributes:
        total: FLOPs counted so far.
        by_op: FLOPs per op name.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.by_op: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        rule = FLOP_RULES.get(func)
        if rule is not None:
            first = out[0] if isinstance(out, tuple | list) else out
            n = int(rule(args, first))
            self.total += n
            self.by_op[str(getattr(func, "overloadpacket", func))] += n
        return out


def call_model(model: nn.Module, dummy_input: Any) -> Any:
    """Call ``model`` on one example input, whatever form it takes.

    ``dummy_input`` is a tensor, a positional tuple/list, a kwargs dict or ``(args, kwargs)``.

    Raises:
        TypeError: ``dummy_input`` is none of these.
    """
    if isinstance(dummy_input, torch.Tensor):
        return model(dummy_input)
    if isinstance(dummy_input, dict):
        return model(**dummy_input)
    if isinstance(dummy_input, tuple | list):
        if (
            len(dummy_input) == 2
            and isinstance(dummy_input[0], tuple)
            and isinstance(dummy_input[1], dict)
        ):
            return model(*dummy_input[0], **dummy_input[1])
        return model(*dummy_input)
    raise TypeError(
        "dummy_input: expected a tensor, a tuple of positional inputs, a dict of "
        f"keyword inputs or (args, kwargs), got {type(dummy_input).__name__}"
    )


# Old private name, kept so that code written against it still imports.
_call = call_model


def to_meta(obj: Any) -> Any:
    """``obj`` (tensor / tuple / list / dict of them) with every tensor on the meta device."""
    if isinstance(obj, torch.Tensor):
        return obj.to("meta")
    if isinstance(obj, dict):
        return {k: to_meta(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(to_meta(v) for v in obj)
    return obj


@torch.no_grad()
def count_flops(model: nn.Module, dummy_input: Any) -> int:
    """FLOPs of one forward of ``model`` on ``dummy_input`` (2 per multiply-accumulate).

    Args:
        model: any module (run once in eval mode, then its train/eval mode is restored).
        dummy_input: a tensor (e.g. ``(N, C, H, W)``), a tuple of positional inputs, a dict of
            keyword inputs, or ``(args, kwargs)``.

    Returns:
        Matmul + convolution + attention FLOPs.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounter() as counter:
            call_model(model, dummy_input)
    finally:
        model.train(was_training)
    return counter.total


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``model``; tied (shared) parameters count once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def profile_model(model: nn.Module, dummy_input: Any) -> dict[str, int]:
    """``{"flops": ..., "params": ...}`` of ``model``."""
    return {"flops": count_flops(model, dummy_input), "params": count_params(model)}
