"""The :class:`QuantFormat` base class and the real-quantized :class:`QuantizedCodes` result.

A format is an *element rule* (integer, FP8, NVFP4, MX, ...; one subclass per family)
composed with a :class:`~.granularity.Granularity` that says which elements share an amax.
The base class does the shared work once: input checks, moving to the working view (padding
and blocking), resolving the amax (given, or computed for dynamic quantization), trying a
registered CUDA kernel, and returning the input dtype. Subclasses implement three small
hooks on the float32 working view: ``_fake_quant_view``, ``_quantize_view`` and
``_dequantize_view``.

All math is float32 (DESIGN §2); the result has the input's dtype.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from ..kernel_registry import CUDA_KERNELS
from .granularity import Granularity, Restore

__all__ = [
    "TINY_AMAX",
    "QuantFormat",
    "QuantizedCodes",
    "check_input",
    "true_div",
    "zero_where",
]

#: amax at or below this quantizes to zero (DESIGN §2).
TINY_AMAX = 2.0**-24

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_input(x: Any, name: str = "x") -> torch.Tensor:
    """Raise a clear ``TypeError`` unless ``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected a float32/float16/bfloat16/float64 tensor, got dtype {x.dtype}"
        )
    return x


def true_div(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """IEEE float32 division ``a / b`` (correctly rounded) on every device.

    Plain ``float / tensor`` is ``reciprocal(tensor) * float`` in PyTorch, and CUDA divides
    by a Python scalar as a multiplication by its reciprocal; both can be one ulp off the
    true quotient, which would break bit-exactness with the pinned numerics and the GPU
    kernels. Scalars are therefore made tensors on the other operand's device first.
    """
    ref = a if isinstance(a, torch.Tensor) else b
    assert isinstance(ref, torch.Tensor)
    if not isinstance(a, torch.Tensor):
        a = torch.tensor(a, dtype=torch.float32, device=ref.device)
    if not isinstance(b, torch.Tensor):
        b = torch.tensor(b, dtype=torch.float32, device=ref.device)
    return torch.div(a, b)


def zero_where(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``out`` with zeros (``+0.0``) where ``mask`` is true; ``mask`` broadcasts to ``out``.

    Used for the ``amax <= 2**-24`` rule (DESIGN §2). Eager: ``out`` is filled in place, and
    only when some element is masked, which almost never happens; an unconditional
    broadcast ``masked_fill`` makes CPU fake quantization up to about 2x slower
    (``benchmarks/zero_where_overhead.py``). Under
    ``torch.compile`` (dynamo, ``torch.export``) that check would be data-dependent Python
    control flow, i.e. a graph break, so the select is emitted unconditionally there, where
    inductor fuses it into the surrounding kernel. Both give the same bits.

    Args:
        out: tensor of any shape and dtype (modified in place in eager mode).
        mask: bool tensor that broadcasts to ``out`` (e.g. ``[N, 1]`` or 0-d).
    """
    if torch.compiler.is_compiling():
        return out.masked_fill(mask, 0)
    return out.masked_fill_(mask, 0) if mask.any() else out


@dataclass
class QuantizedCodes:
    """Real quantized values: codes in their storage dtype plus what is needed to decode them.

    Attributes:
        codes: element codes in the format's storage dtype (int8/uint8/float8/uint8 codes),
            laid out in the working view: the input's shape for per-tensor/per-channel
            formats, ``[num_blocks, block_numel]`` (zero-padded) for block formats.
        scales: per-view scale tensors (float32, float8 or uint8 E8M0 depending on format).
        format: the :class:`QuantFormat` that produced the codes.
        shape: original input shape.
        dtype: original input dtype (the dtype :meth:`dequantize` returns).
    """

    codes: torch.Tensor
    scales: dict[str, torch.Tensor]
    format: QuantFormat
    shape: torch.Size
    dtype: torch.dtype
    restore: Restore = field(repr=False)

    def dequantize(self) -> torch.Tensor:
        """Decode to a tensor of the original shape/dtype, equal to the fake-quantized input."""
        return self.format.dequantize(self)

    def __repr__(self) -> str:
        scales = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in self.scales.items())
        return (
            f"QuantizedCodes({self.format.describe()}, shape={tuple(self.shape)}, "
            f"codes={tuple(self.codes.shape)} {self.codes.dtype}, scales={{{scales}}})"
        )


class QuantFormat(ABC):
    """A number format with its scale granularity.

    Attributes:
        name: format name, e.g. ``"int8"``, ``"fp8_e4m3"``, ``"nvfp4"``.
        bits: bits per element code (without scale overhead).
        max_value: largest representable magnitude of a code (after scaling by 1).
        granularity: which elements share a scale.
    """

    name: str
    bits: int
    max_value: float
    granularity: Granularity

    # ----------------------------------------------------------------- description
    @property
    def scale_bits(self) -> float:
        """Bits of scale storage per element (0 for per-tensor / per-channel)."""
        return 0.0

    @property
    def bits_per_element(self) -> float:
        """Storage bits per element including block-scale overhead (NVFP4: 4.5)."""
        return self.bits + self.scale_bits

    @property
    def amax_granularity(self) -> Granularity | None:
        """Granularity of the calibrated amax this format needs, or ``None`` (nothing needed).

        Calibrators use it to shape the amax they collect.
        """
        return None if self.granularity.dynamic else self.granularity

    @property
    def is_dynamic(self) -> bool:
        """True when the format needs no calibrated amax."""
        return self.amax_granularity is None

    def describe(self) -> str:
        """Readable label, e.g. ``int8 per-channel(axis=0)`` or ``nvfp4 block16``."""
        return f"{self.name} {self.granularity.describe()}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    # ------------------------------------------------------------------- public API
    def compute_amax(self, x: torch.Tensor) -> torch.Tensor | None:
        """The amax a max-calibrator stores for ``x`` (``None`` for fully dynamic formats)."""
        g = self.amax_granularity
        if g is None:
            return None
        view, _ = g.to_view(check_input(x))
        return g.reduce_amax(view)

    def fake_quant(self, x: torch.Tensor, amax: torch.Tensor | None = None) -> torch.Tensor:
        """Quantize and dequantize ``x`` (any shape); returns ``x``'s shape and dtype.

        Args:
            x: float tensor.
            amax: calibrated amax in :attr:`amax_granularity`'s shape; ignored (may be
                ``None``) for dynamic formats.
        """
        check_input(x)
        if x.numel() == 0:
            return x.clone()  # nothing to quantize (and no amax to derive)
        view, restore = self.granularity.to_view(x)
        amax_v = self._view_amax(view, amax)
        out = self._try_kernel(view, amax_v)
        if out is None:
            out = self._fake_quant_view(view.float(), amax_v).to(x.dtype)
        return restore(out)

    def quantize(self, x: torch.Tensor, amax: torch.Tensor | None = None) -> QuantizedCodes:
        """Real quantization: storage-dtype codes plus scales (see :class:`QuantizedCodes`)."""
        check_input(x)
        view, restore = self.granularity.to_view(x)
        amax_v = self._view_amax(view, amax)
        codes, scales = self._quantize_view(view.float(), amax_v)
        return QuantizedCodes(codes, scales, self, x.shape, x.dtype, restore)

    def dequantize(self, q: QuantizedCodes) -> torch.Tensor:
        """Inverse of :meth:`quantize`; bit-exact with :meth:`fake_quant`."""
        if not isinstance(q, QuantizedCodes):
            raise TypeError(f"q: expected QuantizedCodes, got {type(q).__name__}")
        return q.restore(self._dequantize_view(q.codes, q.scales).to(q.dtype))

    # ------------------------------------------------------------------ internals
    def _view_amax(self, view: torch.Tensor, amax: torch.Tensor | None) -> torch.Tensor | None:
        """Resolve the amax that broadcasts against ``view`` (computed when dynamic)."""
        if self.granularity.dynamic:
            return self.granularity.reduce_amax(view)
        if amax is None:
            raise ValueError(
                f"amax: {self.describe()} is static and needs a calibrated amax "
                "(or use type='dynamic')"
            )
        if not isinstance(amax, torch.Tensor):
            amax = torch.as_tensor(amax, dtype=torch.float32, device=view.device)
        return self.granularity.amax_for_view(amax, view)

    def _try_kernel(self, view: torch.Tensor, amax_v: torch.Tensor | None) -> torch.Tensor | None:
        """Call the registered CUDA kernel for this format if any; ``None`` -> torch path."""
        if not view.is_cuda:
            return None
        call = self._kernel_call(view, amax_v)
        if call is None:
            return None
        name, args = call
        fn = CUDA_KERNELS.get(name)
        return None if fn is None else fn(*args)

    def _kernel_call(
        self, view: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[str, tuple[Any, ...]] | None:
        """Kernel name and arguments for ``view`` (``None``: no kernel for this layout)."""
        return None

    @abstractmethod
    def _fake_quant_view(self, v: torch.Tensor, amax_v: torch.Tensor | None) -> torch.Tensor:
        """Float32 fake quantization of the working view."""

    @abstractmethod
    def _quantize_view(
        self, v: torch.Tensor, amax_v: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Codes and scales for the float32 working view."""

    @abstractmethod
    def _dequantize_view(
        self, codes: torch.Tensor, scales: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Float32 values from codes and scales."""
