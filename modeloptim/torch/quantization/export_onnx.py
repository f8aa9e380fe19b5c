"""ONNX export of quantized models (``torch.onnx.export`` with the dynamo exporter).

Inside :func:`onnx_export_mode` every enabled :class:`TensorQuantizer` runs one opaque
``torch.ops.modeloptim.*`` op (its eager kernel is the exact fake quant, so PyTorch outputs do
not change), and :data:`ONNX_TRANSLATIONS` turns each op into ONNX:

=============================  =============================================================
quantizer format               ONNX (``opset_version`` 21 by default)
=============================  =============================================================
INT8 per-tensor / per-channel  ``QuantizeLinear`` (int8) -> ``DequantizeLinear``; scale
                               ``amax / 127`` (``axis`` for per-channel); narrow range:
                               per-tensor inputs are clipped to ``[-amax, amax]`` first
FP8 E4M3 per-tensor/-channel   ``QuantizeLinear`` (float8e4m3fn, opset >= 19) -> ``Dequantize
                               Linear``; scale ``amax / 448``
INT4 blocks (weights, 2-D)     blocked ``QuantizeLinear``/``DequantizeLinear`` (int4,
                               ``block_size``, ``axis=1``; opset >= 21); scale ``[out, nb]``
NVFP4                          custom op ``com.modeloptim::NVFP4FakeQuant(x, global_amax)``
                               (block 16 along the last dim, DESIGN §2 numerics)
MXFP8 / MXFP4                  custom op ``com.modeloptim::MXFakeQuant(x)``, attribute
                               ``elem`` ("e4m3"/"e2m1"), blocks of 32 along the last dim
=============================  =============================================================

ONNX divides by the scale where our fake quant multiplies by its inverse, so results can
differ at exact rounding ties (float32 noise). The custom-domain ops document the numerics
for runtimes (e.g. TensorRT plugins) that implement them; onnxruntime has no kernel for them.

Usage::

    from modeloptim.torch.quantization.export_onnx import export_onnx
    onnx_model = export_onnx(model, (x,), "model.onnx")
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from modeloptim.torch.quantization.nn import TensorQuantizer
from modeloptim.torch.quantization.qtensor import (
    FP8QTensor,
    INT4BlockQTensor,
    INT8QTensor,
    MXFP4QTensor,
    MXFP8QTensor,
    NVFP4QTensor,
)

__all__ = ["ONNX_TRANSLATIONS", "export_onnx", "onnx_export_mode"]

CUSTOM_DOMAIN = "com.modeloptim"


def _per_axis(x: torch.Tensor, amax: torch.Tensor, axis: int) -> torch.Tensor:
    if amax.numel() == 1:
        return amax.reshape(())
    shape = [1] * x.ndim
    shape[axis] = -1
    return amax.reshape(shape)


@torch.library.custom_op("modeloptim::qdq_int8", mutates_args=())
def qdq_int8(x: torch.Tensor, amax: torch.Tensor, axis: int, narrow: bool) -> torch.Tensor:
    """INT8 fake quant; ``amax`` is 0-d (per-tensor) or 1-D along ``axis``."""
    return INT8QTensor.quantize(x, _per_axis(x, amax, axis), narrow_range=narrow).dequantize()


@torch.library.custom_op("modeloptim::qdq_fp8", mutates_args=())
def qdq_fp8(x: torch.Tensor, amax: torch.Tensor, axis: int) -> torch.Tensor:
    """FP8 E4M3 fake quant; ``amax`` is 0-d or 1-D along ``axis``."""
    return FP8QTensor.quantize(x, _per_axis(x, amax, axis)).dequantize()


@torch.library.custom_op("modeloptim::qdq_int4_block", mutates_args=())
def qdq_int4_block(x: torch.Tensor, amax: torch.Tensor, block_size: int) -> torch.Tensor:
    """INT4 block fake quant of a 2-D weight; ``amax`` ``[out, num_blocks]``."""
    return INT4BlockQTensor.quantize(x, amax, block_size).dequantize()


@torch.library.custom_op("modeloptim::fq_nvfp4", mutates_args=())
def fq_nvfp4(x: torch.Tensor, global_amax: torch.Tensor) -> torch.Tensor:
    """NVFP4 fake quant (blocks of 16 along the last dim)."""
    return NVFP4QTensor.quantize(x, global_amax).dequantize()


@torch.library.custom_op("modeloptim::fq_mx", mutates_args=())
def fq_mx(x: torch.Tensor, elem: str) -> torch.Tensor:
    """MX fake quant (blocks of 32 along the last dim); ``elem`` is "e4m3" or "e2m1"."""
    cls = MXFP8QTensor if elem == "e4m3" else MXFP4QTensor
    return cls.quantize(x).dequantize()


for _op in (qdq_int8, qdq_fp8, qdq_int4_block, fq_nvfp4, fq_mx):
    _op.register_fake(lambda x, *args: torch.empty_like(x))


def _register_custom_schemas() -> None:
    """Declare the custom-domain ops to ONNX (documents them; lets the checker verify nodes)."""
    from onnx import defs

    param = defs.OpSchema.FormalParameter
    attr = defs.OpSchema.Attribute
    ints, strs = defs.OpSchema.AttrType.INT, defs.OpSchema.AttrType.STRING
    floats = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
    specs = [
        (
            "NVFP4FakeQuant",
            "NVFP4 quantize-dequantize (DESIGN §2): E2M1 values, an E4M3 scale per block of "
            "block_size along the last axis, float32 global scale global_amax / (6 * 448).",
            [param("X", "T"), param("global_amax", "tensor(float)")],
            [attr("block_size", ints, "elements per E4M3 scale")],
        ),
        (
            "MXFakeQuant",
            "OCP MX quantize-dequantize: power-of-two (E8M0) scale per block of block_size "
            "along the last axis; elements cast to elem (e4m3: MXFP8, e2m1: MXFP4).",
            [param("X", "T")],
            [attr("elem", strs, "element type"), attr("block_size", ints, "block size")],
        ),
    ]
    for name, doc, inputs, attributes in specs:
        if defs.has(name, CUSTOM_DOMAIN):
            continue
        schema = defs.OpSchema(
            name,
            CUSTOM_DOMAIN,
            1,
            doc,
            inputs=inputs,
            outputs=[param("Y", "T")],
            type_constraints=[("T", floats, "float input/output")],
            attributes=attributes,
        )
        defs.register_schema(schema)


def _translations() -> dict[Any, Any]:
    from onnx import TensorProto
    from onnxscript import opset21 as op
    from onnxscript.values import Opset

    _register_custom_schemas()
    custom = Opset(CUSTOM_DOMAIN, 1)

    def int8(x: Any, amax: Any, axis: int, narrow: bool) -> Any:
        scale = op.Div(amax, op.Constant(value_float=127.0))
        per_tensor = amax.shape is not None and len(amax.shape) == 0
        if narrow and per_tensor:  # keep codes in [-127, 127] as the narrow range does
            x = op.Clip(x, op.CastLike(op.Neg(amax), x), op.CastLike(amax, x))
        scale = op.CastLike(scale, x)
        q = op.QuantizeLinear(x, scale, axis=axis, output_dtype=TensorProto.INT8)
        return op.DequantizeLinear(q, scale, axis=axis)

    def fp8(x: Any, amax: Any, axis: int) -> Any:
        scale = op.CastLike(op.Div(amax, op.Constant(value_float=448.0)), x)
        q = op.QuantizeLinear(
            x, scale, axis=axis, saturate=1, output_dtype=TensorProto.FLOAT8E4M3FN
        )
        return op.DequantizeLinear(q, scale, axis=axis)

    def int4_block(x: Any, amax: Any, block_size: int) -> Any:
        scale = op.CastLike(op.Div(amax, op.Constant(value_float=7.0)), x)
        q = op.QuantizeLinear(
            x, scale, axis=1, block_size=block_size, output_dtype=TensorProto.INT4
        )
        return op.DequantizeLinear(q, scale, axis=1, block_size=block_size)

    def nvfp4(x: Any, global_amax: Any) -> Any:
        return custom.NVFP4FakeQuant(x, global_amax, block_size=16)

    def mx(x: Any, elem: str) -> Any:
        return custom.MXFakeQuant(x, elem=elem, block_size=32)

    ops = torch.ops.modeloptim
    return {
        ops.qdq_int8.default: int8,
        ops.qdq_fp8.default: fp8,
        ops.qdq_int4_block.default: int4_block,
        ops.fq_nvfp4.default: nvfp4,
        ops.fq_mx.default: mx,
    }


class _Translations(dict):  # type: ignore[type-arg]
    """Built on first use so that importing this module does not import onnxscript."""

    def ensure(self) -> _Translations:
        if not self:
            self.update(_translations())
        return self


#: ``torch.ops.modeloptim.*`` op -> onnxscript translation (pass as ``custom_translation_table``).
ONNX_TRANSLATIONS = _Translations()


def _axis_of(amax: torch.Tensor) -> int:
    dims = [d for d, s in enumerate(amax.shape) if s != 1]
    if len(dims) != 1:
        raise ValueError(f"amax: shape {tuple(amax.shape)} is not per-tensor or one channel axis")
    return dims[0]


def _onnx_forward(self: TensorQuantizer, x: torch.Tensor) -> torch.Tensor:
    """Exportable forward: one opaque op per quantizer (same numbers as the eager forward)."""
    from modeloptim.torch.export.layers import format_kind

    if not self.is_enabled:
        return x
    if self.pre_quant_scale is not None:
        x = x * self.pre_quant_scale.to(x.dtype)
    if not getattr(self, "_if_quant", True):  # scale-only (AWQ pre-scaler on a W4A16 layer)
        return x
    fmt = self.format
    kind = format_kind(fmt)
    amax = self.amax
    name = getattr(self, "name", "quantizer")
    if kind in ("int8", "int8_pc", "fp8", "fp8_pc"):
        if amax is None:
            raise ValueError(f"{name}: static {fmt.describe()} needs a calibrated amax for ONNX")
        axis = 0 if amax.numel() == 1 else _axis_of(amax)
        flat = amax.reshape(()) if amax.numel() == 1 else amax.reshape(-1)
        if kind.startswith("int8"):
            return torch.ops.modeloptim.qdq_int8(x, flat, axis, bool(self.narrow_range))
        return torch.ops.modeloptim.qdq_fp8(x, flat, axis)
    if kind == "int4_block" and x.ndim == 2:
        bs = int(fmt.granularity.block_sizes[-1])  # type: ignore[attr-defined]
        nb = -(-x.shape[-1] // bs)
        if amax is None or fmt.granularity.dynamic:
            pad = torch.nn.functional.pad(x.detach(), (0, nb * bs - x.shape[-1]))
            amax = pad.reshape(x.shape[0], nb, bs).abs().amax(-1)
        return torch.ops.modeloptim.qdq_int4_block(x, amax.reshape(x.shape[0], nb).float(), bs)
    if kind == "nvfp4":
        g = amax if amax is not None and not fmt.is_dynamic else x.detach().abs().amax()
        return torch.ops.modeloptim.fq_nvfp4(x, g.reshape(()).float())
    if kind in ("mxfp8", "mxfp4"):
        return torch.ops.modeloptim.fq_mx(x, "e4m3" if kind == "mxfp8" else "e2m1")
    raise ValueError(
        f"{name}: {fmt.describe()} has no ONNX export (supported: INT8/FP8 per-tensor or "
        "per-channel, INT4 blocks on 2-D weights, NVFP4, MXFP8, MXFP4)"
    )


@contextlib.contextmanager
def onnx_export_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within this context the model's quantizers run exportable ops (see module doc)."""
    patched = []
    try:
        for m in model.modules():
            if isinstance(m, TensorQuantizer):
                m.forward = types.MethodType(_onnx_forward, m)  # type: ignore[method-assign]
                patched.append(m)
        yield model
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)


def _required_opset(model: nn.Module) -> int:
    from modeloptim.torch.export.layers import format_kind

    need = 13
    for m in model.modules():
        if isinstance(m, TensorQuantizer) and m.is_enabled:
            kind = format_kind(m.format)
            need = max(need, 21 if kind == "int4_block" else 19 if kind.startswith("fp8") else 13)
    return need


def export_onnx(
    model: nn.Module,
    args: tuple[Any, ...],
    f: str | os.PathLike[str] | None = None,
    opset_version: int = 21,
    **kwargs: Any,
) -> Any:
    """Export a quantized model to ONNX (Q/DQ nodes; custom-domain ops for NVFP4/MX).

    Args:
        model: a model quantized with ``mtq.quantize`` (calibrated).
        args: example inputs.
        f: where to save the ``.onnx`` file (optional).
        opset_version: ONNX opset (>= 19 with FP8, >= 21 with INT4 blocks; default 21).
        **kwargs: passed to ``torch.onnx.export`` (e.g. ``dynamic_shapes``, ``input_names``).

    Returns:
        The ``onnx.ModelProto``.

    Raises:
        ValueError: the opset is too low for the model's formats, or a quantizer has a format
            with no ONNX form (named).
    """
    need = _required_opset(model)
    if opset_version < need:
        raise ValueError(
            f"opset_version: the model's quantizers need opset >= {need}, got {opset_version}"
        )
    table = dict(ONNX_TRANSLATIONS.ensure())
    table.update(kwargs.pop("custom_translation_table", {}) or {})
    with onnx_export_mode(model), torch.no_grad():
        program = torch.onnx.export(
            model,
            args,
            dynamo=True,
            opset_version=opset_version,
            custom_translation_table=table,
            **kwargs,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    if f is not None:
        program.save(os.fspath(f))
    return program.model_proto
