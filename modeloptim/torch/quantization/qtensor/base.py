"""Base class and registry for real (packed) quantized tensors.

A quantized tensor owns its packed element codes (``data``) and the scales needed to decode
them, plus the logical ``shape`` and the ``dtype`` :meth:`QTensor.dequantize` returns by
default. It is a plain container, not a ``torch.Tensor`` subclass: modules keep its tensors as
buffers (see :mod:`modeloptim.torch.quantization.compress`) so ``state_dict``, ``.to()`` and
checkpoint code handle them without special cases.

Each format is one subclass registered with :data:`QTENSOR_TYPES`::

    @QTENSOR_TYPES.register("int8")
    class INT8QTensor(QTensor): ...
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import torch

__all__ = [
    "QTENSOR_TYPES",
    "TINY_AMAX",
    "QTensor",
    "QTensorRegistry",
    "check_float",
    "last_dim_blocks",
    "true_div",
]

#: amax at or below this quantizes to zero (DESIGN §2).
TINY_AMAX = 2.0**-24

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

T = TypeVar("T", bound="type[QTensor]")


def true_div(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """Correctly rounded float32 ``a / b``.

    ``float / tensor`` is computed by PyTorch as ``reciprocal(tensor) * float`` (and CUDA
    divides by Python scalars through a reciprocal), which can be one ulp off; both operands
    are made tensors so that ``torch.div`` performs a true IEEE division.
    """
    ref = a if isinstance(a, torch.Tensor) else b
    assert isinstance(ref, torch.Tensor), "true_div needs at least one tensor"
    ta = (
        a
        if isinstance(a, torch.Tensor)
        else torch.tensor(a, dtype=torch.float32, device=ref.device)
    )
    tb = (
        b
        if isinstance(b, torch.Tensor)
        else torch.tensor(b, dtype=torch.float32, device=ref.device)
    )
    return torch.div(ta, tb)


def check_float(x: Any, name: str = "x") -> torch.Tensor:
    """Raise a ``TypeError`` naming ``name`` unless ``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name}: expected at least one dim, got a 0-d tensor")
    return x


def last_dim_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """Zero-pad the last dim of ``x`` to a multiple of ``block``; view ``[..., nb, block]``."""
    if block <= 0:
        raise ValueError(f"block_size: expected a positive int, got {block}")
    pad = (-x.shape[-1]) % block
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], x.shape[-1] // block, block)


class QTensor(ABC):
    """A real quantized tensor: packed codes + scales.

    Attributes:
        data: packed element codes (int8 / uint8 / float8, format-specific layout).
        scales: decoding tensors by name (e.g. ``{"scale": ...}``); float32, float8 or uint8.
        shape: logical (unpadded) shape of the quantized tensor.
        dtype: default dtype of :meth:`dequantize`.
        meta: plain-data format parameters (block size, bits, ...) needed to decode.
    """

    #: registry name, set by :meth:`QTensorRegistry.register`.
    format_name: ClassVar[str] = ""

    def __init__(
        self,
        data: torch.Tensor,
        scales: dict[str, torch.Tensor],
        shape: torch.Size | tuple[int, ...],
        dtype: torch.dtype,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.data = data
        self.scales = dict(scales)
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.meta = dict(meta or {})

    # ---------------------------------------------------------------- constructors
    @classmethod
    @abstractmethod
    def quantize(cls: type[QT], x: torch.Tensor, *args: Any, **kwargs: Any) -> QT:
        """Quantize the float tensor ``x``; see each subclass for its scale arguments."""

    # --------------------------------------------------------------------- decoding
    @abstractmethod
    def _dequantize_f32(self) -> torch.Tensor:
        """Float32 values in the logical shape."""

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Decode to ``dtype`` (default: the quantized input's dtype), logical shape.

        Equals the fake-quantized input exactly (DESIGN §2).
        """
        return self._dequantize_f32().to(dtype or self.dtype)

    # ----------------------------------------------------------------- bookkeeping
    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``("data", data)`` followed by the scale tensors."""
        yield "data", self.data
        yield from self.scales.items()

    @property
    def device(self) -> torch.device:
        """Device of the packed data."""
        return self.data.device

    @property
    def nbytes(self) -> int:
        """Bytes of storage: packed codes plus scales."""
        return sum(t.numel() * t.element_size() for _, t in self.tensors())

    @property
    def bits_per_element(self) -> float:
        """Storage bits per logical element (codes + scales)."""
        return 8.0 * self.nbytes / max(1, math.prod(self.shape))

    def to(self: QT, device: torch.device | str) -> QT:
        """Copy to ``device`` (new object; this one is unchanged)."""
        return type(self)(
            self.data.to(device),
            {k: v.to(device) for k, v in self.scales.items()},
            self.shape,
            self.dtype,
            self.meta,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to save: ``data``, the scales, and ``shape`` (int64)."""
        out = dict(self.tensors())
        out["shape"] = torch.tensor(list(self.shape), dtype=torch.int64)
        return out

    def extra_state(self) -> dict[str, Any]:
        """Plain-data description needed by :meth:`from_state_dict` besides the tensors."""
        return {
            "format": self.format_name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], extra: dict[str, Any]) -> QTensor:
        """Rebuild a quantized tensor from :meth:`state_dict` and :meth:`extra_state`."""
        qcls = QTENSOR_TYPES.get(extra["format"])
        dtype = getattr(torch, extra["dtype"])
        scales = {k: v for k, v in sd.items() if k not in ("data", "shape")}
        return qcls(sd["data"], scales, tuple(sd["shape"].tolist()), dtype, extra["meta"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype}, "
            f"bits/elem={self.bits_per_element:.3f}, meta={self.meta})"
        )


QT = TypeVar("QT", bound=QTensor)


class QTensorRegistry:
    """Name -> :class:`QTensor` subclass; the extension point for new packed formats."""

    def __init__(self) -> None:
        self._types: dict[str, type[QTensor]] = {}

    def register(self, name: str) -> Callable[[type[QT]], type[QT]]:
        """Class decorator registering a :class:`QTensor` subclass under ``name``."""

        def deco(cls: type[QT]) -> type[QT]:
            if name in self._types:
                raise ValueError(f"name: quantized tensor format {name!r} is already registered")
            cls.format_name = name
            self._types[name] = cls
            return cls

        return deco

    def get(self, name: str) -> type[QTensor]:
        """The class registered under ``name``; ``KeyError`` lists the known names."""
        if name not in self._types:
            raise KeyError(
                f"format: unknown quantized tensor format {name!r}; known: {sorted(self._types)}"
            )
        return self._types[name]

    def names(self) -> list[str]:
        """Registered names."""
        return sorted(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types


QTENSOR_TYPES = QTensorRegistry()
