"""``QuantizerAttributeConfig``: validated attributes of one :class:`TensorQuantizer`.

Field names and values follow ModelOpt (``num_bits=(2, 1)`` with
``block_sizes={-1: 16, "type": "dynamic", "scale_bits": (4, 3)}`` is NVFP4, ...); ``num_bits``
also takes a named format (``"int8"``, ``"fp8_e4m3"``, ``"nvfp4"``, ``"mxfp4"``, ...).

Differences from ModelOpt, on purpose:

- ``narrow_range`` defaults to ``True`` (DESIGN §2: signed range ``[-bound, bound]``).
- The whole combination is checked when the config is built (the format is resolved), so an
  unsupported ``num_bits``/``block_sizes`` pair fails here, naming the fields, before any
  model is touched.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from ..formats.resolve import NAMED_FORMATS, parse_num_bits, resolve_format

__all__ = ["CalibratorName", "QuantizerAttributeConfig"]

CalibratorName = Literal["max", "histogram"]
_CALIB_DICT_KEYS = {
    "method",
    "type",
    "num_bins",
    "skip_zeros",
    "amax_method",
    "percentile",
    "start_bin",
    "stride",
}
#: how a histogram calibrator turns its histogram into amax (``amax_method`` key)
_HIST_AMAX_METHODS = ("percentile", "entropy", "mse")


class QuantizerAttributeConfig(BaseModel):
    """Attributes of a tensor quantizer (pydantic v2; unknown fields are rejected).

    Attributes:
        enable: quantizer on/off.
        num_bits: int bits (INT), ``(E, M)`` tuple (FP8/FP6/FP4) or a named format.
        axis: per-channel axis/axes (``None``: per tensor unless ``block_sizes``).
        block_sizes: ``{dim: size, "type": "static"|"dynamic", "scale_bits": (E, M)}``.
        unsigned: unsigned integer range.
        narrow_range: signed INT range ``[-bound, bound]`` (True) or ``[-bound-1, bound]``.
        fake_quant: fake quantization (True) or real codes (False).
        learn_amax: amax becomes a trainable parameter (clipped-STE gradient).
        type: ``"static"`` (calibrated amax) or ``"dynamic"`` (amax from each input).
        calibrator: ``"max"`` or ``"histogram"``, or a dict ``{"method": ..., options}``;
            for histograms ``amax_method`` (``"percentile"``, ``"entropy"``, ``"mse"``) and
            its options (``percentile``, ``start_bin``, ``stride``) choose how amax is
            computed per quantizer.
        trt_high_precision_dtype: accepted for compatibility (informational).
        pre_quant_scale: accepted for compatibility; only ``None`` (set the tensor on the
            quantizer instead).
        rotate: ModelOpt's Hadamard rotation flag; accepted as ``False`` only.
        bias: ModelOpt's asymmetric-bias settings; accepted as ``None`` only.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enable: bool = True
    num_bits: int | tuple[int, int] | str = 8
    axis: int | tuple[int, ...] | None = None
    block_sizes: dict[int | str, Any] | None = None
    unsigned: bool = False
    narrow_range: bool = True
    fake_quant: bool = True
    learn_amax: bool = False
    type: Literal["static", "dynamic"] = "static"
    calibrator: CalibratorName | dict[str, Any] = "max"
    trt_high_precision_dtype: Literal["Half", "BFloat16", "Float"] = "Float"
    pre_quant_scale: None = None
    rotate: Literal[False] = False
    bias: None = None

    @field_validator("num_bits", mode="before")
    @classmethod
    def _check_num_bits(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.lower() not in NAMED_FORMATS:
                raise ValueError(
                    f"num_bits: unknown format name {v!r}; expected one of {sorted(NAMED_FORMATS)}"
                )
            return v.lower()
        return parse_num_bits(v)

    @field_validator("axis", mode="before")
    @classmethod
    def _check_axis(cls, v: Any) -> Any:
        if isinstance(v, list):
            v = tuple(v)
        if isinstance(v, tuple) and not v:
            raise ValueError("axis: empty tuple; use None for per-tensor")
        return v

    @field_validator("block_sizes", mode="before")
    @classmethod
    def _normalize_block_keys(cls, v: Any) -> Any:
        # JSON round trips turn int dim keys into strings ("-1"); store them as ints again.
        if isinstance(v, dict):
            out: dict[Any, Any] = {}
            for k, val in v.items():
                if isinstance(k, str) and k.lstrip("-").isdigit():
                    k = int(k)
                out[k] = tuple(val) if k == "scale_bits" and isinstance(val, list) else val
            return out
        return v

    @field_validator("calibrator", mode="before")
    @classmethod
    def _check_calibrator(cls, v: Any) -> Any:
        if isinstance(v, dict):
            unknown = set(v) - _CALIB_DICT_KEYS
            if unknown:
                allowed = sorted(_CALIB_DICT_KEYS)
                raise ValueError(f"calibrator: unknown keys {sorted(unknown)}; allowed {allowed}")
            method = v.get("method", v.get("type", "max"))
            if method not in ("max", "histogram"):
                raise ValueError(f"calibrator: method must be 'max' or 'histogram', got {method!r}")
            amax_method = v.get("amax_method", "percentile")
            if amax_method not in _HIST_AMAX_METHODS:
                raise ValueError(
                    f"calibrator: amax_method must be one of {list(_HIST_AMAX_METHODS)}, "
                    f"got {amax_method!r}"
                )
        elif v not in ("max", "histogram"):
            raise ValueError(f"calibrator: expected 'max' or 'histogram', got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_combination(self) -> QuantizerAttributeConfig:
        if self.axis is not None and self.block_sizes:
            raise ValueError(
                f"axis and block_sizes: set one of them, not both (axis={self.axis!r}, "
                f"block_sizes={self.block_sizes!r})"
            )
        resolve_format(self)  # raises ValueError naming num_bits / block_sizes
        return self

    @property
    def calibrator_method(self) -> str:
        """``"max"`` or ``"histogram"``."""
        c = self.calibrator
        if isinstance(c, dict):
            return str(c.get("method", c.get("type", "max")))
        return c

    @property
    def calibrator_amax_kwargs(self) -> dict[str, Any]:
        """``compute_amax`` arguments of a histogram calibrator (``{}``: its defaults)."""
        c = self.calibrator
        if not isinstance(c, dict):
            return {}
        out: dict[str, Any] = {k: c[k] for k in ("percentile", "start_bin", "stride") if k in c}
        if "amax_method" in c:
            out["method"] = c["amax_method"]
        return out

    @property
    def calibrator_options(self) -> dict[str, Any]:
        """Extra calibrator keyword arguments (``num_bins``, ``skip_zeros``)."""
        c = self.calibrator
        if isinstance(c, dict):
            return {k: v for k, v in c.items() if k in ("num_bins", "skip_zeros")}
        return {}
