"""Registry of quantized layer wrappers and their shared bases.

``QuantModuleRegistry`` maps a layer class to a wrapper class and a registered name (the name
``parent_class`` in a ``quant_cfg`` entry refers to). Conversion is in place through
:class:`~modeloptim.torch.opt.dynamic.DynamicModule`: the layer's class becomes a generated
subclass of ``(wrapper, original)``, parameters stay where they are.

Users add their own layers the ModelOpt way::

    mtq.QuantModuleRegistry.register({MyLinear: "MyLinear"})(QuantMyLinear)

where ``QuantMyLinear`` either derives from one of the bases here (e.g.
:class:`QuantLinearConvBase`) or, as in ModelOpt, from ``MyLinear`` itself with a ``_setup``
method that creates its quantizers and a ``forward`` that calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from modeloptim.torch.opt.dynamic import DynamicModule
from modeloptim.torch.quantization.config import QuantizerAttributeConfig
from modeloptim.torch.quantization.nn.modules.sequential_quantizer import SequentialQuantizer
from modeloptim.torch.quantization.nn.modules.tensor_quantizer import TensorQuantizer

QuantizerLike = TensorQuantizer | SequentialQuantizer
"""A module quantizer attribute: one TensorQuantizer or a chain of them."""

__all__ = [
    "QuantInputBase",
    "QuantLinearConvBase",
    "QuantModule",
    "QuantModuleRegistry",
    "QuantModuleRegistryCls",
    "QuantizerLike",
    "cache_quantized_weights",
]

#: ModelOpt's default quantizer settings: 8-bit per tensor inputs, per-row (axis 0) weights.
DEFAULT_INPUT_CFG = QuantizerAttributeConfig(num_bits=8)
DEFAULT_WEIGHT_CFG = QuantizerAttributeConfig(num_bits=8, axis=0)


def _disabled(cfg: QuantizerAttributeConfig) -> TensorQuantizer:
    q = TensorQuantizer(cfg)
    q.disable()
    return q


class QuantModule(DynamicModule):
    """Base of every quantized wrapper (a ``DynamicModule``).

    Subclasses create their quantizers in ``_setup``; ``weight_names`` lists the parameters a
    ``weight_quantizer`` fake-quantizes inside ``forward`` (reads of them outside ``forward``
    return the stored float weight).
    """

    weight_names: ClassVar[tuple[str, ...]] = ()

    def _setup(self, **kwargs: Any) -> None:
        self.__dict__["_quantize_weights"] = False

    def weight_quantizer_pairs(self) -> list[tuple[QuantizerLike, torch.Tensor]]:
        """``(quantizer, stored weight)`` for each weight this layer quantizes."""
        quantizer = self._modules.get("weight_quantizer")
        if not isinstance(quantizer, QuantizerLike):
            return []
        pairs: list[tuple[QuantizerLike, torch.Tensor]] = []
        # ModelOpt-style wrappers call weight_quantizer(self.weight) themselves: "weight".
        for n in self.weight_names or ("weight",):
            weight = self._parameters.get(n)
            if weight is not None:
                pairs.append((quantizer, weight))
        return pairs

    @contextmanager
    def quantize_weight(self) -> Iterator[None]:
        """Within this context, reading a weight returns its fake-quantized value."""
        previous = self.__dict__.get("_quantize_weights", False)
        self.__dict__["_quantize_weights"] = True
        try:
            yield
        finally:
            self.__dict__["_quantize_weights"] = previous

    def _register_weight_quantization(self) -> None:
        for name in self.weight_names:
            if self._parameters.get(name) is not None:
                self._register_dynamic_attribute(name, _quantized_weight)


_CACHE = "_quantized_weight_cache"


def _signature(quantizer: nn.Module, pins: list[Any]) -> tuple[Any, ...] | None:
    """Everything a quantizer's output depends on besides its input (None: do not cache).

    A flat tuple of ids, versions and flags, so that comparing two keys is one C-level tuple
    comparison (this runs on every cached weight read). The objects behind the ids go into
    ``pins``, which the cache entry keeps alive, so an id cannot be recycled while cached.
    """
    if isinstance(quantizer, SequentialQuantizer):
        parts: list[Any] = []
        for q in quantizer:
            sig = _signature(q, pins)
            if sig is None:
                return None
            parts.extend(sig)
        return tuple(parts)
    if not isinstance(quantizer, TensorQuantizer) or quantizer._if_calib:
        return None
    amax, pqs, fmt = quantizer._amax, quantizer._pre_quant_scale, quantizer._format
    pins.extend((amax, pqs, fmt))
    return (
        id(fmt),
        quantizer._disabled,
        quantizer._if_quant,
        quantizer._cfg.fake_quant,
        id(amax),
        -1 if amax is None else amax._version,
        id(pqs),
        -1 if pqs is None else pqs._version,
    )


def _quantized_weight(module: nn.Module, weight: Any) -> Any:
    if not module.__dict__.get("_quantize_weights", False):
        return weight
    quantizer: nn.Module = module._modules["weight_quantizer"]  # type: ignore[assignment]
    cache = module.__dict__.get(_CACHE)
    if cache is None or torch.is_grad_enabled():
        return quantizer(weight)
    return _cached(cache, quantizer, weight)


def _cached(cache: dict[int, Any], quantizer: nn.Module, weight: torch.Tensor) -> Any:
    """``quantizer(weight)``, reused while the weight and the quantizer's state are unchanged."""
    pins: list[Any] = [weight]
    sig = _signature(quantizer, pins)
    if sig is None:
        return quantizer(weight)
    key = (id(weight), weight._version, *sig)
    hit = cache.get(id(weight))
    if hit is not None and hit[0] == key:
        return hit[1]
    out = quantizer(weight)
    cache[id(weight)] = (key, out, pins)
    return out


@contextmanager
def cache_quantized_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Within this context, inference (no grad) quantizes each weight once and reuses it.

    The cached copy is recomputed when the weight is modified in place, or when its
    quantizer's format, switches, amax or pre_quant_scale change; calibration and training
    (grad enabled) bypass the cache. Costs one extra copy of the quantized weights. Layers
    whose input quantizers see the same input tensor and resolve to the same kernel call
    and amax value (q/k/v, gate/up after max calibration) share one quantized input; the
    last shared input is kept until the next one or the end of the context.
    """
    layers = [m for m in model.modules() if isinstance(m, QuantModule)]
    memo: list[Any] = [None]  # shared by the layers: see TensorQuantizer._quant
    for layer in layers:
        layer.__dict__[_CACHE] = {}
        layer.__dict__[_FAST_LINEAR] = _plain_linear(layer)
        layer.__dict__[_MEMO] = memo
    try:
        yield model
    finally:
        memo[0] = None
        for layer in layers:
            layer.__dict__.pop(_CACHE, None)
            layer.__dict__.pop(_FAST_LINEAR, None)
            layer.__dict__.pop(_MEMO, None)


_FAST_LINEAR = "_fast_linear_forward"
_MEMO = "_shared_input_memo"
#: Set by ``compress`` on packed plain linear layers: ``fn(layer, input) -> output | None``
#: running a real low-bit GEMM (``compressed_gemm.compressed_linear_forward``).
BACKEND_FORWARD = "_backend_forward"


def _plain_linear(layer: nn.Module) -> bool:
    """Whether ``layer``'s forward is exactly quantized ``nn.Linear`` math (fast path allowed).

    True for a quantized ``nn.Linear`` (or subclass that keeps its forward) converted with the
    stock wrapper: its forward is ``F.linear(input_q, weight_q, bias)`` then the output
    quantizer, which the fast path runs without the per-read attribute machinery.
    """
    original = getattr(layer, "_original_cls", None)
    return (
        isinstance(layer._parameters.get("weight"), torch.Tensor)  # not a packed weight
        and isinstance(original, type)
        and issubclass(original, nn.Linear)
        and original.forward is nn.Linear.forward
        and type(layer).forward is QuantLinearConvBase.forward
        and isinstance(layer._modules.get("weight_quantizer"), QuantizerLike)
    )


def _linear_fast_forward(layer: nn.Module, input: torch.Tensor) -> Any:
    """Cached-weight inference forward of a quantized ``nn.Linear`` (see ``_plain_linear``).

    Same operations as the generic path (input quantizer, cached weight, ``F.linear``, output
    quantizer) without entering the weight-read context or the dynamic attribute lookup,
    which cost tens of microseconds of host time per layer and call. Quantizers without
    hooks are called through ``forward`` directly, and a disabled output quantizer without
    hooks (it would return its input) not at all.
    """
    modules = layer._modules
    iq = modules["input_quantizer"]
    # the memo lets layers that quantize the same input alike share one launch
    memo = layer.__dict__[_MEMO]
    x = iq._quant(input, memo) if _hookless(iq) else iq(input)  # type: ignore[union-attr, operator, misc]
    weight = layer._parameters["weight"]
    assert weight is not None
    w = _cached(layer.__dict__[_CACHE], modules["weight_quantizer"], weight)  # type: ignore[arg-type]
    out = F.linear(x, w, layer._parameters.get("bias"))
    oq = modules["output_quantizer"]
    if _hookless(oq) and oq._disabled:  # type: ignore[union-attr]
        return out  # a disabled quantizer returns its input
    return oq(out)  # type: ignore[misc]


_any_global_hook = getattr(torch.nn.modules.module, "_has_any_global_hook", None)


def _hookless(q: Any) -> bool:
    """A plain ``TensorQuantizer`` without module hooks: ``q.forward(x)`` is ``q(x)``.

    (``Module.__call__`` adds nothing else then; calling ``forward`` saves its overhead.)
    """
    return (
        type(q) is TensorQuantizer
        and _any_global_hook is not None
        and not (
            q._forward_hooks
            or q._forward_pre_hooks
            or q._backward_hooks
            or q._backward_pre_hooks
            or _any_global_hook()
        )
    )


class QuantInputBase(QuantModule):
    """Wrapper with ``input_quantizer`` (on the first input) and ``output_quantizer``.

    The output quantizer is created disabled, as in ModelOpt.
    """

    default_input_cfg: ClassVar[QuantizerAttributeConfig] = DEFAULT_INPUT_CFG

    def _setup(self, **kwargs: Any) -> None:
        super()._setup(**kwargs)
        self.input_quantizer = TensorQuantizer(self.default_input_cfg)
        self.output_quantizer = _disabled(self.default_input_cfg)

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        """Quantize the input, run the original layer, quantize the output."""
        out = super().forward(self.input_quantizer(input), *args, **kwargs)
        return self.output_quantizer(out)


class QuantLinearConvBase(QuantInputBase):
    """Linear/conv-like wrapper: adds ``weight_quantizer`` applied to ``weight`` in forward."""

    weight_names: ClassVar[tuple[str, ...]] = ("weight",)
    default_weight_cfg: ClassVar[QuantizerAttributeConfig] = DEFAULT_WEIGHT_CFG

    def _setup(self, **kwargs: Any) -> None:
        super()._setup(**kwargs)
        self.weight_quantizer = TensorQuantizer(self.default_weight_cfg)
        self._register_weight_quantization()

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped layer with its weight fake-quantized."""
        if not args and not kwargs and not torch.is_grad_enabled():
            backend = self.__dict__.get(BACKEND_FORWARD)
            if backend is not None:
                out = backend(self, input)
                if out is not None:
                    return out
            if self.__dict__.get(_FAST_LINEAR, False):
                return _linear_fast_forward(self, input)
        with self.quantize_weight():
            return super().forward(input, *args, **kwargs)


class QuantModuleRegistryCls:
    """Layer class -> (wrapper class, registered name); exact-type lookup."""

    def __init__(self) -> None:
        self._wrappers: dict[type[nn.Module], type[QuantModule]] = {}
        self._names: dict[type[nn.Module], str] = {}

    def register(self, cls_to_name: dict[type[nn.Module], str]) -> Callable[[type], type]:
        """Decorator registering a wrapper for each layer class in ``cls_to_name``.

        Args:
            cls_to_name: ``{layer class: name}``, e.g. ``{nn.Linear: "nn.Linear"}``.

        Returns:
            A decorator taking the wrapper class and returning it unchanged.
        """
        if not isinstance(cls_to_name, dict) or not cls_to_name:
            raise TypeError("cls_to_name: expected a non-empty dict {layer class: name}")
        for cls, name in cls_to_name.items():
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise TypeError(f"cls_to_name: key {cls!r} is not an nn.Module subclass")
            if not isinstance(name, str):
                raise TypeError(f"cls_to_name: name for {cls.__name__} must be a str")

        def deco(wrapper: type) -> type:
            adapted = _as_quant_module(wrapper)
            for cls, name in cls_to_name.items():
                self._wrappers[cls] = adapted
                self._names[cls] = name
            return wrapper

        return deco

    def unregister(self, cls: type[nn.Module]) -> None:
        """Remove the wrapper registered for ``cls`` (no error if none)."""
        self._wrappers.pop(cls, None)
        self._names.pop(cls, None)

    def __contains__(self, cls: object) -> bool:
        return cls in self._wrappers

    def get(self, cls: type[nn.Module]) -> type[QuantModule] | None:
        """Wrapper registered for exactly ``cls``, or None."""
        return self._wrappers.get(cls)

    def get_name(self, cls: type[nn.Module]) -> str | None:
        """Registered name of ``cls`` (``"nn.Linear"``...), or None."""
        return self._names.get(cls)

    def convert(self, module: nn.Module) -> QuantModule:
        """Convert ``module`` in place with its registered wrapper.

        Raises:
            KeyError: ``type(module)`` is not registered.
        """
        wrapper = self._wrappers.get(type(module))
        if wrapper is None:
            raise KeyError(f"module: no quantized wrapper registered for {type(module).__name__}")
        return wrapper.convert(module)


def _as_quant_module(wrapper: type) -> type[QuantModule]:
    """Return ``wrapper`` as a :class:`QuantModule` subclass.

    ModelOpt-style wrappers derive from the layer class itself (with ``_setup``); they get
    ``QuantModule`` mixed in *after* them so their ``_setup``/``forward`` run first.
    """
    if issubclass(wrapper, QuantModule):
        return wrapper
    if not issubclass(wrapper, nn.Module):
        raise TypeError(f"wrapper: {wrapper!r} is not an nn.Module subclass")
    return type(wrapper.__name__, (wrapper, QuantModule), {"__module__": wrapper.__module__})


QuantModuleRegistry = QuantModuleRegistryCls()
