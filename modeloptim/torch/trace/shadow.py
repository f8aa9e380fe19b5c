"""Shadow execution while tracing: every fx node is also run on the example inputs.

This lets the tracer follow Python code that only looks at *shapes* (``if x.shape[1] != 3``,
``(*x.shape[:-1], -1)``, ``int(seq_len)``): such values are specialized to the example, and a
``shape_guard`` node records which sizes the graph now assumes, so the analyzer can freeze
them. Conditions on tensor *data* (``if x.sum() > 0``) still fail, so the module falls back.
"""

from __future__ import annotations

import builtins
import contextlib
import operator
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx
from torch.fx.node import map_arg

_MISSING = object()
_PLAIN_MODULES = {
    "_operator",
    "operator",
    "builtins",
    "torch",
    "torch.functional",
    "torch.nn.functional",
    "torch._C._nn",
    "torch._C._VariableFunctions",
    None,
}
_SIZE_METHODS = {"size", "dim", "numel", "ndimension", "nelement"}


def shape_guard(*values: Any) -> None:
    """Graph marker: traced code branched on these size-derived values (no-op at run time)."""
    del values


class ShadowProxy(fx.Proxy):
    """A proxy that knows its example value when it is derived from shapes only."""

    def __len__(self) -> int:
        v = self.tracer.shadow(self.node)  # type: ignore[attr-defined]
        if isinstance(v, tuple | list | torch.Size):
            return len(v)
        raise fx.proxy.TraceError("len() of a traced value")

    def __index__(self) -> int:
        return self.tracer.concrete_int(self)  # type: ignore[attr-defined]

    def __int__(self) -> int:
        return self.tracer.concrete_int(self)  # type: ignore[attr-defined]


class ShadowMixin:
    """Mixed into an fx.Tracer: keeps example values of nodes and shape-only flags."""

    example: dict[str, Any]
    values: dict[fx.Node, Any]
    shape_only: set[fx.Node]

    def init_shadow(self, example: dict[str, Any] | None) -> None:
        """Set example values of the root's arguments (by name)."""
        self.example = dict(example or {})
        self.values = {}
        self.shape_only = set()

    def proxy(self, node: fx.Node) -> fx.Proxy:
        """Create proxies that support len/int/index through the shadow values."""
        return ShadowProxy(node, self)  # type: ignore[arg-type]

    def shadow(self, node: fx.Node) -> Any:
        """Example value of ``node`` (``_MISSING`` when unknown)."""
        return self.values.get(node, _MISSING)

    def create_proxy(
        self,
        kind: str,
        target: Any,
        args: Any,
        kwargs: Any,
        name: str | None = None,
        type_expr: Any = None,
        proxy_factory_fn: Any = None,
    ) -> fx.Proxy:
        """Create the proxy, then run its op on the example values."""
        p = super().create_proxy(  # type: ignore[misc]
            kind, target, args, kwargs, name, type_expr, proxy_factory_fn
        )
        node = p.node
        value = self._run(node)
        if value is not _MISSING:
            self.values[node] = value
            if isinstance(value, torch.Tensor):  # readers use it instead of a second run
                node.meta["mo_shape"] = tuple(value.shape)
            if self._is_shape_only(node, value):
                self.shape_only.add(node)
        return p

    def _run(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self.example.get(str(node.target).lstrip("*"), _MISSING)
        missing = False

        def val(n: fx.Node) -> Any:
            nonlocal missing
            v = self.values.get(n, _MISSING)
            if v is _MISSING and n.op == "get_attr":  # made by create_arg, not create_proxy
                v = self.values[n] = self._attr(str(n.target))
            missing |= v is _MISSING
            return v

        args = map_arg(node.args, val)
        kwargs = map_arg(node.kwargs, val)
        if missing:
            return _MISSING
        if node.op == "call_module" and len(args) == 1 and not kwargs:
            mod = self.root.get_submodule(str(node.target))  # type: ignore[attr-defined]
            if type(mod) is torch.nn.Linear and not _has_hooks(mod):
                return self._run_linear(mod, args[0])
        # reverting fx's patches is costly: only needed where user code runs (modules...)
        plain = node.op in ("call_method", "get_attr") or (
            node.op == "call_function"
            and getattr(node.target, "__module__", None) in _PLAIN_MODULES
        )
        try:
            with torch.no_grad(), contextlib.nullcontext() if plain else _unpatched():
                if node.op == "get_attr":
                    return self._attr(str(node.target))
                if node.op == "call_function":
                    if node.target is shape_guard:
                        return None
                    return node.target(*args, **kwargs)  # type: ignore[operator]
                if node.op == "call_method":
                    return getattr(args[0], str(node.target))(*args[1:], **kwargs)
                if node.op == "call_module":
                    mod = self.root.get_submodule(str(node.target))  # type: ignore[attr-defined]
                    return mod(*args, **kwargs)
        except Exception:
            return _MISSING
        return _MISSING

    @staticmethod
    def _run_linear(mod: torch.nn.Linear, x: Any) -> Any:
        """``mod(x)`` for a plain ``nn.Linear`` without hooks, with fx's patches in place.

        Its forward is ``F.linear(x, weight, bias)``; reading the parameters from the module's
        dict skips fx's patched ``Module.__getattr__``, so no patches need reverting (see
        :func:`_member`). Linear layers are most of an LLM's leaf calls.
        """
        try:
            with torch.no_grad():
                weight = mod._parameters["weight"]
                assert weight is not None
                return F.linear(x, weight, mod._parameters["bias"])
        except Exception:
            return _MISSING

    def _attr(self, target: str) -> Any:
        obj: Any = self.root  # type: ignore[attr-defined]
        for part in target.split("."):
            found = _member(obj, part)
            if found is _MISSING:  # e.g. a root wrapper's own __getattr__ fallback
                with _unpatched():
                    found = getattr(obj, part, _MISSING)
            obj = found
            if obj is _MISSING:
                break
        return obj

    def _is_shape_only(self, node: fx.Node, value: Any) -> bool:
        if _has_tensor(value):
            return False
        if node.op == "call_method" and node.target in _SIZE_METHODS:
            return True
        if (
            node.op == "call_function"
            and node.target is builtins.getattr
            and node.args[1] in ("shape", "ndim", "dtype", "device", "is_cuda", "layout")
        ):
            return True
        if node.op == "call_function" and node.target is builtins.len:
            return True
        inputs = node.all_input_nodes
        return bool(inputs) and all(n in self.shape_only for n in inputs)

    def concrete_int(self, p: fx.Proxy) -> int:
        """``int()``/``__index__`` of a size-derived proxy: specialize and guard."""
        v = self.values.get(p.node, _MISSING)
        if p.node in self.shape_only and isinstance(v, int):
            self.create_proxy("call_function", shape_guard, (p,), {})
            return int(v)
        raise fx.proxy.TraceError("int() of a value computed from tensor data")

    def to_bool(self, obj: fx.Proxy) -> bool:
        """Branch on a size-derived condition by its example value (with a guard node)."""
        v = self.values.get(obj.node, _MISSING)
        if obj.node in self.shape_only and v is not _MISSING:
            self.create_proxy("call_function", shape_guard, (obj,), {})
            return bool(v)
        return super().to_bool(obj)  # type: ignore[misc]

    def iter(self, obj: fx.Proxy) -> Iterator[Any]:
        """Iterate size tuples (``*x.shape[:-1]``) by their example length."""
        v = self.values.get(obj.node, _MISSING)
        if isinstance(v, tuple | list | torch.Size):
            return iter([obj[i] for i in range(len(v))])  # type: ignore[index]
        return super().iter(obj)  # type: ignore[misc]


def _has_hooks(mod: torch.nn.Module) -> bool:
    g = torch.nn.modules.module
    return bool(
        mod._forward_hooks
        or mod._forward_pre_hooks
        or g._global_forward_hooks
        or g._global_forward_pre_hooks
    )


def _member(obj: Any, name: str) -> Any:
    """``getattr(obj, name)`` that never reaches fx's patched ``Module.__getattr__``.

    Parameters, buffers and submodules are read from the module's own dicts; other
    attributes resolve normally (``__getattr__`` only runs when that fails). Reverting fx's
    patches instead costs a class-attribute write on ``nn.Module``, which invalidates the
    method caches of every subclass (a large share of tracing time on a 30-layer LLM).
    """
    if isinstance(obj, torch.nn.Module):
        for table in (obj._parameters, obj._buffers, obj._modules):
            if name in table:
                return table[name]
    try:
        return object.__getattribute__(obj, name)
    except AttributeError:
        return _MISSING


def _unpatched() -> contextlib.AbstractContextManager[Any]:
    """Undo fx's tracing patches (``Module.__call__``...) while running real code."""
    from torch.fx import _symbolic_trace

    revert = getattr(_symbolic_trace, "_maybe_revert_all_patches", None)
    return revert() if revert is not None else contextlib.nullcontext()


def _has_tensor(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, tuple | list):
        return any(_has_tensor(v) for v in x)
    if isinstance(x, dict):
        return any(_has_tensor(v) for v in x.values())
    return False


__all__ = ["ShadowMixin", "ShadowProxy", "operator", "shape_guard"]
