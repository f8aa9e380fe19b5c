"""``TensorQuantizer``: the module that quantizes one tensor (weight, input, output, KV).

It holds the calibrated ``amax`` (buffer ``_amax``, saved in the state dict), the validated
:class:`QuantizerAttributeConfig`, a format object (:func:`resolve_format`) that does the
math, and a calibrator. Forward, in order:

1. disabled -> return the input object unchanged;
2. ``pre_quant_scale`` set -> ``x = x * pre_quant_scale`` (as ModelOpt: the scaled input is
   what gets calibrated and quantized, and what passes through when quantization is off);
3. calibration on -> the calibrator collects ``x``;
4. quantization on -> fake quantization (straight-through gradient), or the real
   :class:`QuantizedCodes` when ``fake_quant=False``. A static format without an amax raises
   ``RuntimeError``; while calibrating it uses the batch's own amax instead.

Changing attributes with :meth:`set_from_attribute_config` is a partial update; if it
touches ``num_bits``/``axis``/``block_sizes``, the layout fields it leaves out (``axis``,
``block_sizes``) reset to ``None`` so that an old layout never leaks into a new format.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ...calib import Calibrator, HistogramCalibrator, MaxCalibrator
from ...config import QuantizerAttributeConfig
from ...formats import Blocked, PerChannel, QuantFormat, QuantizedCodes, resolve_format
from ...kernel_registry import CUDA_KERNELS
from ...tensor_quant import fake_quant_ste

__all__ = ["TensorQuantizer"]

_LAYOUT_FIELDS = ("num_bits", "axis", "block_sizes")
_UNSET = object()


def _fmt_values(t: torch.Tensor) -> str:
    t = t.detach().float()
    if t.numel() == 1:
        return f"{t.item():.4g}"
    return f"[{t.min().item():.4g}, {t.max().item():.4g}]({t.numel()})"


class TensorQuantizer(nn.Module):
    """Quantize a tensor with a configurable format, amax and calibrator.

    ``amax`` shapes: per tensor ``[]``; per channel the input's rank with the ``axis`` dims
    kept and 1 elsewhere (weight ``[out, in]``, ``axis=0`` -> ``[out, 1]``); static blocks
    ``[num_blocks, 1]``; NVFP4 the global (per-tensor) amax ``[]``; MX and dynamic formats
    none.

    Args:
        quant_attribute_cfg: attributes (config object or dict); defaults to INT8 per tensor.
        amax: optional initial amax (float or tensor in the format's amax shape).

    Example::

        q = TensorQuantizer({"num_bits": 8, "axis": 0})   # per-output-channel INT8
        q.enable_calib(); q.disable_quant()
        q(weight)                                          # collect max |w| per row
        q.load_calib_amax(); q.disable_calib(); q.enable_quant()
        w_fq = q(weight)                                   # [out, in], weight's dtype
    """

    _amax: torch.Tensor | None
    _pre_quant_scale: torch.Tensor | None

    def __init__(
        self,
        quant_attribute_cfg: QuantizerAttributeConfig | Mapping[str, Any] | None = None,
        amax: torch.Tensor | float | None = None,
    ) -> None:
        super().__init__()
        self.name = ""  # set by module wrappers; used in error messages
        self._cfg = QuantizerAttributeConfig()
        self._format: QuantFormat = resolve_format(self._cfg)
        self._calibrator: Calibrator | None = None
        self._disabled = False
        self._if_quant = True
        self._if_calib = False
        self._amax = None
        self._pre_quant_scale = None
        # (key, plan) of the CUDA fast dispatch, see _fast_fake_quant
        self._fast_plan: tuple[Any, Any] | None = None
        self.set_from_attribute_config(quant_attribute_cfg or {})
        if amax is not None:
            self.amax = amax

    # ------------------------------------------------------------------ configuration
    def set_from_attribute_config(
        self, attribute_cfg: QuantizerAttributeConfig | Mapping[str, Any]
    ) -> None:
        """Update attributes (partial); the result is validated before anything changes."""
        if isinstance(attribute_cfg, QuantizerAttributeConfig):
            updates = {k: getattr(attribute_cfg, k) for k in attribute_cfg.model_fields_set}
        elif isinstance(attribute_cfg, Mapping):
            updates = dict(attribute_cfg)
        else:
            raise TypeError(
                "attribute_cfg: expected a QuantizerAttributeConfig or a dict, got "
                f"{type(attribute_cfg).__name__}"
            )
        merged = self._cfg.model_dump()
        if any(k in updates for k in _LAYOUT_FIELDS):
            merged.update(axis=None, block_sizes=None)
        merged.update(updates)
        cfg = QuantizerAttributeConfig(**merged)  # raises before any state changes
        fmt = resolve_format(cfg)
        calibrator = self._make_calibrator(cfg, fmt)
        self._cfg, self._format, self._calibrator = cfg, fmt, calibrator
        self._disabled = not cfg.enable
        if self._amax is not None:
            self.amax = self._amax.detach()  # re-register as buffer/parameter per learn_amax

    @staticmethod
    def _make_calibrator(cfg: QuantizerAttributeConfig, fmt: QuantFormat) -> Calibrator | None:
        g = fmt.amax_granularity
        if g is None:
            return None
        axis = g.axis if isinstance(g, PerChannel) else None
        blocks = g.block_sizes if isinstance(g, Blocked) else None
        num_bits = cfg.num_bits if not isinstance(cfg.num_bits, str) else 8
        if cfg.calibrator_method == "histogram":
            if axis is not None or blocks is not None:
                raise ValueError(
                    "calibrator: 'histogram' collects a per-tensor amax; it cannot calibrate "
                    f"{fmt.describe()} (use 'max')"
                )
            return HistogramCalibrator(
                num_bits,
                None,
                cfg.unsigned,
                **cfg.calibrator_options,
                narrow_range=cfg.narrow_range,
            )
        return MaxCalibrator(num_bits, axis, cfg.unsigned, block_sizes=blocks)

    @property
    def quant_attribute_cfg(self) -> QuantizerAttributeConfig:
        """The validated attributes currently applied."""
        return self._cfg

    @property
    def format(self) -> QuantFormat:
        """The format object doing the math."""
        return self._format

    @property
    def num_bits(self) -> int | tuple[int, int] | str:
        """``num_bits`` attribute."""
        return self._cfg.num_bits

    @property
    def axis(self) -> int | tuple[int, ...] | None:
        """``axis`` attribute."""
        return self._cfg.axis

    @property
    def block_sizes(self) -> dict[int | str, Any] | None:
        """``block_sizes`` attribute."""
        return self._cfg.block_sizes

    @property
    def unsigned(self) -> bool:
        """``unsigned`` attribute."""
        return self._cfg.unsigned

    @property
    def narrow_range(self) -> bool:
        """``narrow_range`` attribute."""
        return self._cfg.narrow_range

    @property
    def learn_amax(self) -> bool:
        """``learn_amax`` attribute."""
        return self._cfg.learn_amax

    @property
    def fake_quant(self) -> bool:
        """Fake quantization (True) or real codes (False)."""
        return self._cfg.fake_quant

    @fake_quant.setter
    def fake_quant(self, value: bool) -> None:
        self._cfg.fake_quant = bool(value)

    @property
    def is_enabled(self) -> bool:
        """False when the quantizer is disabled (forward returns its input)."""
        return not self._disabled

    @property
    def is_dynamic(self) -> bool:
        """True when the format needs no calibrated amax."""
        return self._format.is_dynamic

    @property
    def maxbound(self) -> float:
        """Largest code magnitude of the element format (127 for INT8, 448 for E4M3)."""
        return self._format.max_value

    # --------------------------------------------------------------------- tensors
    def _set_tensor(self, attr: str, value: Any, learnable: bool = False) -> None:
        if value is None:
            self._buffers.pop(attr, None)
            self._parameters.pop(attr, None)
            self.__dict__[attr] = None
            return
        public = attr.lstrip("_")
        if not isinstance(value, torch.Tensor):
            try:
                value = torch.tensor(value, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(
                    f"{public}: expected a tensor or number, got {type(value).__name__}"
                ) from None
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{public}: expected a floating tensor, got dtype {value.dtype}")
        t = value.detach().to(torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{public}: values must be finite, got {_fmt_values(t)}")
        if attr == "_amax" and bool((t < 0).any()):
            raise ValueError(f"amax: must be non-negative, got min {t.min().item():.4g}")
        old = self._buffers.get(attr, self._parameters.get(attr))
        if (
            old is not None
            and old.shape == t.shape
            and isinstance(old, nn.Parameter) == learnable
            and old is not value
        ):
            # Same slot: copy in place so optimizers, hooks and devices keep their tensor.
            with torch.no_grad():
                old.copy_(t)
            return
        self._buffers.pop(attr, None)
        self._parameters.pop(attr, None)
        self.__dict__.pop(attr, None)
        if old is not None:
            t = t.to(old.device)
        if learnable:
            self.register_parameter(attr, nn.Parameter(t.clone()))
        else:
            self.register_buffer(attr, t.clone())

    @property
    def amax(self) -> torch.Tensor | None:
        """Calibrated amax (float32; shape per the format), or ``None``."""
        return self._amax

    @amax.setter
    def amax(self, value: torch.Tensor | float | None) -> None:
        self._set_tensor("_amax", value, learnable=self._cfg.learn_amax)

    @property
    def pre_quant_scale(self) -> torch.Tensor | None:
        """Per-channel input scale applied before quantization (SmoothQuant/AWQ), or None."""
        return self._pre_quant_scale

    @pre_quant_scale.setter
    def pre_quant_scale(self, value: torch.Tensor | float | None) -> None:
        self._set_tensor("_pre_quant_scale", value)

    @property
    def step_size(self) -> torch.Tensor | None:
        """``amax / maxbound`` (the quantization step), or ``None`` without amax."""
        return None if self._amax is None else self._amax / self.maxbound

    def reset_amax(self) -> None:
        """Drop the amax and whatever the calibrator collected."""
        self.amax = None
        if self._calibrator is not None:
            self._calibrator.reset()

    def export_amax(self) -> torch.Tensor | None:
        """A detached copy of amax for export (``None`` for dynamic formats / no amax)."""
        if self._amax is None or self._format.is_dynamic:
            return None
        return self._amax.detach().clone()

    def _load_from_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A fresh quantizer has no _amax buffer yet: create it so that loading restores it.
        for attr in ("_amax", "_pre_quant_scale"):
            key = prefix + attr
            if key in state_dict and getattr(self, attr) is None:
                self._set_tensor(
                    attr,
                    torch.zeros_like(state_dict[key], dtype=torch.float32),
                    learnable=attr == "_amax" and self._cfg.learn_amax,
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]

    def _apply(self, fn: Any, recurse: bool = True) -> TensorQuantizer:
        # model.half()/.to(bfloat16) must move amax and pre_quant_scale but keep them
        # float32: a bf16 amax would change every scale (8-bit mantissa).
        held: dict[str, torch.Tensor] = {}
        for name in ("_amax", "_pre_quant_scale"):
            t = self._buffers.pop(name, None)
            if t is not None:
                held[name] = t
        super()._apply(fn, recurse)
        for name, t in held.items():
            moved = fn(t)
            if moved.dtype != t.dtype:
                moved = t.to(device=moved.device)
            self._buffers[name] = moved
        return self

    # ------------------------------------------------------------------ switches
    def enable(self) -> None:
        """Turn the quantizer on."""
        self._disabled = False
        self._cfg.enable = True

    def disable(self) -> None:
        """Turn the quantizer off (forward returns its input unchanged)."""
        self._disabled = True
        self._cfg.enable = False

    def enable_quant(self) -> None:
        """Quantize in forward."""
        self._if_quant = True

    def disable_quant(self) -> None:
        """Do not quantize in forward (calibration may still collect)."""
        self._if_quant = False

    def enable_calib(self) -> None:
        """Collect calibration statistics in forward (no-op for dynamic formats)."""
        self._if_calib = True

    def disable_calib(self) -> None:
        """Stop collecting calibration statistics."""
        self._if_calib = False

    def load_calib_amax(
        self, method: str | None = None, strict: bool = True, **kwargs: Any
    ) -> None:
        """Set amax from the calibrator (``method``/kwargs go to ``compute_amax``).

        Raises:
            RuntimeError: no calibrator (dynamic format) or nothing collected (``strict``).
        """
        if self._calibrator is None:
            if strict:
                raise RuntimeError(
                    f"{self._label()}: {self._format.describe()} is dynamic and has no "
                    "calibrator, so there is no amax to load"
                )
            return
        if method is None:
            # Per-quantizer histogram choice from the config (calibrator amax_method).
            kwargs = {**self._cfg.calibrator_amax_kwargs, **kwargs}
            amax = self._calibrator.compute_amax(**kwargs)
        else:
            amax = self._calibrator.compute_amax(method, **kwargs)
        if amax is None:
            if strict:
                raise RuntimeError(
                    f"{self._label()}: the calibrator collected no data; run forward passes "
                    "with calibration enabled first"
                )
            return
        self.amax = amax

    # ------------------------------------------------------------------ forward
    def _label(self) -> str:
        return f"TensorQuantizer {self.name!r}" if self.name else "TensorQuantizer"

    def forward(self, x: torch.Tensor) -> torch.Tensor | QuantizedCodes:
        """Quantize ``x`` (any shape); see the module docstring for the steps."""
        return self._quant(x, None)

    def _quant(self, x: torch.Tensor, memo: list[Any] | None) -> torch.Tensor | QuantizedCodes:
        """:meth:`forward`; ``memo`` (a one-slot list) may share the CUDA fast path's output.

        Quantizers that get the same input tensor (unchanged) and resolve to the same kernel
        call with the same amax value compute the same output: with a ``memo`` the previous
        such output is returned instead of launching again (the q/k/v projections of an
        attention block, gate/up of an MLP). Only for callers that do not modify the output
        in place (the cached inference ``nn.Linear`` path).
        """
        if self._disabled:
            return x
        if self._pre_quant_scale is not None:
            pqs = self._scale_for(x)
            try:
                x = x * pqs
            except RuntimeError:
                raise ValueError(
                    f"{self._label()}: pre_quant_scale of shape {tuple(pqs.shape)} does not "
                    f"broadcast to the input of shape {tuple(x.shape)}"
                ) from None
        if self._if_calib and self._calibrator is not None:
            try:
                self._calibrator.collect(x)
            except ValueError as e:
                raise ValueError(f"{self._label()}: {e}") from e
        if not self._if_quant:
            return x
        fmt = self._format
        amax = self._amax
        if fmt.amax_granularity is None:
            amax = None
        elif amax is None:
            if not self._if_calib:
                raise RuntimeError(
                    f"{self._label()} ({fmt.describe()}) has no amax: calibrate it "
                    "(mtq.calibrate / enable_calib + forward + load_calib_amax), set .amax, "
                    "or use type='dynamic'"
                )
            amax = fmt.compute_amax(x)
        elif amax.device != x.device:
            amax = amax.to(x.device)
        if not self._cfg.fake_quant:
            return fmt.quantize(x, amax)
        if x.is_cuda and not (
            torch.is_grad_enabled()
            and (x.requires_grad or (amax is not None and amax.requires_grad))
        ):
            out = self._fast_fake_quant(x, amax, memo)
            if out is not None:
                return out
        return fake_quant_ste(x, amax, fmt)

    def _scale_for(self, x: torch.Tensor) -> torch.Tensor:
        """``pre_quant_scale`` on ``x``'s device and dtype.

        On CUDA without autograd the converted copy is kept (keyed by the scale tensor and
        its version) instead of launching a conversion kernel on every forward; the values
        are the same ``.to()`` result either way.
        """
        pqs = self._pre_quant_scale
        assert pqs is not None
        if not x.is_cuda or torch.is_grad_enabled():
            return pqs.to(device=x.device, dtype=x.dtype)
        key = (id(pqs), pqs._version, x.dtype, x.device)
        hit = self.__dict__.get("_pqs_cast")
        if hit is None or hit[0] != key:
            hit = (key, pqs.to(device=x.device, dtype=x.dtype), pqs)  # pqs pins its id
            self.__dict__["_pqs_cast"] = hit
        return hit[1]  # type: ignore[no-any-return]

    def _fast_fake_quant(
        self, x: torch.Tensor, amax: torch.Tensor | None, memo: list[Any] | None = None
    ) -> torch.Tensor | None:
        """CUDA inference: the format's kernel call, resolved once per input signature.

        ``fmt.fake_quant`` re-derives the working view, the amax view and the kernel
        arguments on every call (tens of microseconds of host time per layer); for a static
        amax, or a dynamic block format whose kernel computes its own scales, they only
        depend on the input's shape/dtype/layout and on the amax tensor, so they are
        resolved on the first call and replayed while those stay the same (the kernel
        launch itself is replayed too, see ``triton._launch.PreparedLaunch``). The same
        kernel runs with the same arguments: results are identical to the format path.
        Returns ``None`` (use the format path) when the view is not a plain reshape of ``x``
        or no kernel takes the layout.
        """
        key = (
            x.shape,
            x.dtype,
            x.device,
            x.is_contiguous(),
            id(self._format),
            id(amax),
            -1 if amax is None else amax._version,
        )
        hit = self.__dict__.get("_fast_plan")
        if hit is None or hit[0] != key:
            hit = (key, self._plan_fast(x, amax))
            self._fast_plan = hit
        plan = hit[1]
        if plan is None:
            return None
        if memo is None:
            # the kernel reads x's memory as the flat working view: no reshape needed
            return plan[0](x)  # type: ignore[no-any-return]
        share = self._share_key(plan, x)
        if share is None:
            return plan[0](x)  # type: ignore[no-any-return]
        last = memo[0]
        if last is not None and last[0]() is x and last[1] == x._version and last[2] == share:
            return last[3]  # type: ignore[no-any-return]
        out = plan[0](x)
        memo[0] = (weakref.ref(x), x._version, share, out)
        return out  # type: ignore[no-any-return]

    def _share_key(self, plan: tuple[Any, ...], x: torch.Tensor) -> tuple[Any, ...] | None:
        """What makes two quantizers' outputs on one input equal: kernel call and amax value.

        Computed once per plan, when a memo first asks (one host read of a per-tensor amax;
        only the stored amax qualifies, so calibration's per-batch amax never gets here).
        None: no sharing (per-channel amax, a learned amax, or an amax copied per call).
        """
        state = plan[3]
        if state[0] is _UNSET:
            amax = plan[2]
            value: float | None = None
            ok = amax is None
            if amax is not None and amax.numel() == 1:
                stored = self._buffers.get("_amax")
                ok = amax is stored
                value = float(amax.item()) if ok else None
            state[0] = (state[1], state[2], state[3], x.dtype, value) if ok else None
        return state[0]  # type: ignore[no-any-return]

    def _plan_fast(self, x: torch.Tensor, amax: torch.Tensor | None) -> tuple[Any, ...] | None:
        fmt = self._format
        if not x.is_contiguous() or x.numel() == 0:
            return None
        if fmt.is_dynamic:
            amax = None  # only block kernels that compute their own scales qualify, below
        elif amax is None:
            return None
        view, _ = fmt.granularity.to_view(x)
        if view.data_ptr() != x.data_ptr() or view.numel() != x.numel():
            return None  # padded or permuted view: restore is more than a reshape
        if not view.is_contiguous():
            return None
        if amax is None:
            # dynamic: kernels that derive every scale from the data take no amax argument
            # (the format path's amax view is unused by them); anything else -> format path
            call = fmt._kernel_call(view, None)
            if call is None or any(isinstance(a, torch.Tensor) for a in call[1][1:]):
                return None
        else:
            call = fmt._kernel_call(view, fmt._view_amax(view, amax))
        if call is None or not call[1] or call[1][0] is not view:
            return None
        fn = CUDA_KERNELS.get(call[0])
        if fn is None:
            return None
        rest = tuple(call[1][1:])
        prepare = getattr(fn, "prepare", None)  # kernels that can pre-resolve their launch
        launch: Any
        if prepare is not None:
            launch = prepare(view, *rest)  # takes x itself: same memory as the view
            if launch is None:
                return None
        else:
            view_shape = tuple(view.shape)

            def call_kernel(v: torch.Tensor) -> torch.Tensor | None:
                out = fn(v.view(view_shape), *rest)
                return None if out is None else out.view(v.shape)

            launch = call_kernel

        # share key for the memo of _quant: filled on first use with a memo (_share_key)
        # (tensor arguments, i.e. the amax view, enter the key by value in _share_key)
        rest_key = tuple(None if isinstance(a, torch.Tensor) else a for a in rest)
        share: list[Any] = [_UNSET, call[0], rest_key, tuple(view.shape)]
        # fmt and amax are kept so that their ids in the key cannot be reused
        return launch, fmt, amax, share

    def extra_repr(self) -> str:  # noqa: D102
        if self._disabled:
            return "disabled"
        parts = [self._format.describe()]
        if not self._cfg.fake_quant:
            parts.append("real-quant")
        if self._amax is not None:
            parts.append(f"amax={_fmt_values(self._amax)}")
        elif not self._format.is_dynamic:
            parts.append("amax=None")
        if self._pre_quant_scale is not None:
            parts.append(f"pre_quant_scale={_fmt_values(self._pre_quant_scale)}")
        if self._cfg.learn_amax:
            parts.append("learn_amax")
        if not self._if_quant:
            parts.append("quant=off")
        if self._if_calib:
            parts.append(f"calib={type(self._calibrator).__name__ if self._calibrator else 'n/a'}")
        return " ".join(parts)
