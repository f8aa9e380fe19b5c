"""Public entry points of ONNX autocast."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modeloptim.onnx.autocast.convert import AutocastReport, choose_low_nodes, rewrite_precision
from modeloptim.onnx.autocast.precision import get_precision
from modeloptim.onnx.calib_data import make_feeds
from modeloptim.onnx.model_io import default_output_path, load_model, save_model_atomic
from modeloptim.onnx.ort_utils import make_session
from modeloptim.onnx.sanitize import infer_shapes, remove_unused_initializers, sanitize

if TYPE_CHECKING:
    import onnx


def convert_model(
    model: onnx.ModelProto,
    low_precision_type: str,
    feeds: Sequence[dict[str, np.ndarray]],
    keep_io_types: bool = True,
    max_relative_error: float | None = None,
    nodes_to_exclude: Sequence[str] | None = None,
    op_types_to_exclude: Sequence[str] | None = None,
) -> tuple[onnx.ModelProto, AutocastReport]:
    """In-memory conversion of a sanitized model; see :func:`convert_to_mixed_precision`."""
    precision = get_precision(low_precision_type)
    tol = max_relative_error if max_relative_error is not None else 16 * precision.unit_roundoff
    model, _ = sanitize(model, min_opset=precision.min_opset, reason=f"{precision.name} autocast")
    report = AutocastReport(precision.name)
    low = choose_low_nodes(
        model, precision, feeds, report, tol, nodes_to_exclude, op_types_to_exclude
    )
    report.converted = [n.name for n in model.graph.node if n.name in low]
    report.casts_inserted = rewrite_precision(model, low, precision, keep_io_types)
    remove_unused_initializers(model)
    model = infer_shapes(model)
    return model, report


def convert_to_mixed_precision(
    onnx_path: str | os.PathLike[str],
    low_precision_type: str = "fp16",
    keep_io_types: bool = True,
    reference_data: Any = None,
    output_path: str | os.PathLike[str] | None = None,
    max_relative_error: float | None = None,
    nodes_to_exclude: Sequence[str] | None = None,
    op_types_to_exclude: Sequence[str] | None = None,
    max_reference_samples: int = 8,
) -> AutocastReport:
    """Convert an fp32 ONNX model to FP16/BF16, keeping unsafe nodes in fp32.

    A node stays fp32 when, on ``reference_data`` run through onnxruntime, one of its values
    overflows the low type or computing it in the low type deviates by more than
    ``max_relative_error`` (default ``16 * unit roundoff``: 7.8e-3 for fp16, 6.3e-2 for bf16);
    also when its operator schema has no low-precision form, or the user excludes it.

    Args:
        onnx_path: the fp32 model (never modified).
        low_precision_type: ``"fp16"`` or ``"bf16"``.
        keep_io_types: keep graph inputs/outputs fp32 (Casts at the boundary).
        reference_data: like ``calibration_data`` of
            :func:`modeloptim.onnx.quantization.quantize` (``None``: random, with a warning).
        output_path: destination; default ``<name>.<fp16|bf16>.onnx`` beside the input.
        max_relative_error: per-node tolerance (L2 relative error of its outputs).
        nodes_to_exclude: node names (exact, wildcard or regex) kept fp32.
        op_types_to_exclude: op types kept fp32.
        max_reference_samples: at most this many feeds are used for the measurement.

    Returns:
        An :class:`AutocastReport` (converted and kept nodes, casts, output error).
    """
    precision = get_precision(low_precision_type)
    if max_relative_error is not None and not max_relative_error > 0:
        raise ValueError(
            f"max_relative_error: expected a positive number, got {max_relative_error}"
        )
    source = load_model(onnx_path)
    original, _ = sanitize(load_model(source))
    feeds = make_feeds(reference_data, original, arg="reference_data")[:max_reference_samples]
    model, report = convert_model(
        source,
        precision.name,
        feeds,
        keep_io_types,
        max_relative_error,
        nodes_to_exclude,
        op_types_to_exclude,
    )
    out = Path(output_path) if output_path else default_output_path(onnx_path, precision.name)
    save_model_atomic(model, out)
    report.output_path = str(out)
    if precision.name == "fp16":  # onnxruntime's CPU provider has no bf16 kernels
        ref_s, low_s = make_session(original), make_session(model)
        names = [o.name for o in original.graph.output]
        for feed in feeds:
            low_feed = (
                feed
                if keep_io_types
                else {
                    k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feed.items()
                }
            )
            for name, r, g in zip(
                names, ref_s.run(names, feed), low_s.run(names, low_feed), strict=True
            ):
                if not np.issubdtype(np.asarray(r).dtype, np.floating):
                    continue
                r64, g64 = np.asarray(r, np.float64), np.asarray(g, np.float64)
                err = float(np.max(np.abs(g64 - r64)) / max(np.max(np.abs(r64)), 1e-30))
                report.output_max_rel_error[name] = max(
                    report.output_max_rel_error.get(name, 0), err
                )
    return report
