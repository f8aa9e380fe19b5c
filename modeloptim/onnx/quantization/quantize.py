"""``modeloptim.onnx.quantization.quantize``: post-training quantization of ONNX files."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modeloptim.onnx import fold_affine
from modeloptim.onnx.calib_data import make_feeds
from modeloptim.onnx.fuse_activations import fuse_hardswish
from modeloptim.onnx.model_io import default_output_path, load_model, save_model_atomic
from modeloptim.onnx.ort_utils import float_tensor_names, run_capture
from modeloptim.onnx.quantization.activation import ACTIVATION_TYPES
from modeloptim.onnx.quantization.bias_correction import correct_biases
from modeloptim.onnx.quantization.calibrators import CALIBRATORS, Calibrator
from modeloptim.onnx.quantization.formats import FORMATS
from modeloptim.onnx.quantization.int4 import (
    DEFAULT_INT4_OP_TYPES,
    INT4_METHODS,
    Int4Report,
    plan_int4,
)
from modeloptim.onnx.quantization.int4_graph import apply_int4
from modeloptim.onnx.quantization.placement import add_output_qdq, narrow_ranges
from modeloptim.onnx.quantization.qdq import (
    DEFAULT_OP_TYPES,
    QdqPlan,
    QdqReport,
    apply_qdq,
    plan_qdq,
)
from modeloptim.onnx.quantization.sensitivity import (
    budget_count,
    drop_sensitive,
    node_sensitivity,
    output_sensitivity,
)
from modeloptim.onnx.sanitize import default_opset, remove_unused_initializers, sanitize

_LOG = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8", "fp8", "int4")
HIGH_PRECISION_DTYPES = ("fp32", "fp16", "bf16")
QDQ_PLACEMENTS = ("units", "inputs")
SENSITIVITY_METRICS = ("local", "output")
DEFAULT_METHOD = {"int8": "max", "fp8": "max", "int4": "awq_clip"}
BLOCK_SIZES = (16, 32, 64, 128, 256)
# Histogram calibration keeps the first pass's captured tensors up to this many bytes.
CALIBRATION_CACHE_BYTES = 512 * 2**20
# Oldest opset we upgrade from: the version converter is unreliable below it.
_MIN_SOURCE_OPSET = 7


@dataclass
class QuantizeResult:
    """Summary of one :func:`quantize` run (also printed by the CLI)."""

    output_path: str
    quantize_mode: str
    calibration_method: str
    opset: int
    quantized_nodes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    input_bytes: int = 0
    output_bytes: int = 0
    sensitivity: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)


def _validate(mode: str, method: str | None, high: str, block: int) -> str:
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize_mode: unknown {mode!r}, expected one of {list(QUANTIZE_MODES)}")
    method = method or DEFAULT_METHOD[mode]
    allowed = list(INT4_METHODS) if mode == "int4" else CALIBRATORS.names()
    if method not in allowed:
        raise ValueError(
            f"calibration_method: {method!r} is not available for quantize_mode={mode!r}, "
            f"expected one of {allowed}"
        )
    if high not in HIGH_PRECISION_DTYPES:
        raise ValueError(
            f"high_precision_dtype: unknown {high!r}, expected one of {list(HIGH_PRECISION_DTYPES)}"
        )
    if block not in BLOCK_SIZES:
        raise ValueError(f"block_size: expected one of {list(BLOCK_SIZES)}, got {block!r}")
    return method


def quantize(
    onnx_path: str | os.PathLike[str],
    quantize_mode: str = "int8",
    calibration_data: Any = None,
    calibration_method: str | None = None,
    output_path: str | os.PathLike[str] | None = None,
    op_types_to_quantize: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] | None = None,
    high_precision_dtype: str = "fp32",
    block_size: int = 128,
    use_matmul_nbits: bool = False,
    calibration_batch_size: int = 1,
    percentile: float = 99.99,
    upgrade_opset: bool = True,
    disable_mha_qdq: bool = False,
    skip_sensitive_nodes: int = 0,
    activation_type: str | None = None,
    qdq_placement: str | None = None,
    fold_conv_affine: bool = True,
    fuse_activations: bool = True,
    sensitivity_metric: str = "local",
    sensitivity_samples: int = 4,
    bias_correction: bool = False,
    sensitivity_budget: float | None = None,
) -> QuantizeResult:
    """Quantize an ONNX model and write the result next to it (or to ``output_path``).

    Args:
        onnx_path: the float32 ONNX model (never modified).
        quantize_mode: ``"int8"`` or ``"fp8"`` (Q/DQ on activations and per-channel weights of
            ``op_types_to_quantize``), or ``"int4"`` (weight-only, blocked).
        calibration_data: ``None`` (random, with a warning), an array, a dict of input name ->
            array ``(N, ...)``, a list of feeds, or a ``.npy``/``.npz`` path.
        calibration_method: int8/fp8: ``"max"``, ``"entropy"``, ``"percentile"``; int4:
            ``"rtn"``, ``"awq_lite"``, ``"awq_clip"``. Defaults: max / max / awq_clip.
        output_path: destination; default ``<name>.quant.onnx`` beside the input.
        op_types_to_quantize: op types to quantize (default Conv, ConvTranspose, Gemm, MatMul
            for int8/fp8; MatMul, Gemm, Gather for int4).
        nodes_to_exclude: node names (exact, wildcard or regex) left in float.
        high_precision_dtype: ``"fp32"`` keeps the rest of the graph in float32; ``"fp16"`` /
            ``"bf16"`` converts it with :func:`modeloptim.onnx.autocast.convert_to_mixed_precision`.
        block_size: int4 block size along the reduction axis.
        use_matmul_nbits: int4 only: write onnxruntime ``MatMulNBits`` instead of opset-21
            blocked DequantizeLinear for MatMul/Gemm.
        calibration_batch_size: samples per onnxruntime run when arrays are split.
        percentile: percentile for ``calibration_method="percentile"``.
        upgrade_opset: raise the opset when the mode needs it (13 for int8, 19 for fp8, 21 for
            int4); if False, an older model is rejected.
        disable_mha_qdq: int8/fp8: leave MatMuls between two activations (attention) float.
        skip_sensitive_nodes: int8/fp8: keep this many nodes in float, those whose outputs
            change most (measured with onnxruntime on calibration data) when quantized.
        activation_type: int8 mode: ``"uint8"`` (asymmetric, the default: onnxruntime CPU's
            native U8S8 layout, see :mod:`~modeloptim.onnx.quantization.activation`) or
            ``"int8"`` (symmetric, zero point 0: what TensorRT requires; pass it for
            TensorRT); fp8 mode: ``"fp8"``. The int8-mode default is uint8 because it
            measures best on onnxruntime, the runtime every output is checked with: magika
            top-1 agreement with fp32 on 1000 real files 0.991 (uint8) vs 0.986 (int8).
        qdq_placement: ``"units"``: Q/DQ on the inputs of quantized ops and on the
            outputs whose runtime kernel needs them (``DQ -> Conv -> Q``, fused into
            ``QLinearConv``; see :mod:`~modeloptim.onnx.quantization.placement`);
            ``"inputs"``: on inputs only (the runtime then runs those ops in float).
            Default (``None``): ``"units"`` for int8, ``"inputs"`` for fp8, which no
            runtime kernel here consumes as a unit (onnxruntime has no fp8 QLinear ops;
            TensorRT fuses input Q/DQ itself) and where the extra output rounding costs
            accuracy: magika fp8 top-1 agreement with fp32 0.991 (inputs) vs 0.979 (units).
        fuse_activations: int8/fp8: rewrite exported activation chains as one op
            (``x * Clip(x + 3, 0, 6) / 6`` -> ``HardSwish``, opset 14).
        sensitivity_metric: how ``skip_sensitive_nodes`` ranks nodes: ``"local"`` (the
            node's own output error with its inputs quantized; fast) or ``"output"`` (the
            model's output error with that node alone quantized; one onnxruntime session per
            node, sees how errors propagate to the result).
        sensitivity_samples: calibration samples used to measure sensitivity.
        sensitivity_budget: int8/fp8: keep float the fewest most sensitive nodes such that
            the remaining nodes' combined sensitivity (root sum of squares of their scores,
            e.g. the relative output error with ``sensitivity_metric="output"``) is at most
            this; ``skip_sensitive_nodes`` (if > 0) then caps the count.
        bias_correction: int8/fp8: subtract each quantized Conv/Gemm/MatMul(+Add)'s mean
            output error on the calibration data from its bias (see
            :mod:`~modeloptim.onnx.quantization.bias_correction`).
        fold_conv_affine: int8/fp8: fold constant ``Mul``/``Add`` after a Conv into its
            weight and bias first (what onnxruntime does to the float model).

    Returns:
        A :class:`QuantizeResult` with the output path and what was quantized.
    """
    method = _validate(quantize_mode, calibration_method, high_precision_dtype, block_size)
    if not isinstance(skip_sensitive_nodes, int) or skip_sensitive_nodes < 0:
        raise ValueError(
            f"skip_sensitive_nodes: expected a non-negative int, got {skip_sensitive_nodes!r}"
        )
    act_name = _validate_activation(quantize_mode, activation_type)
    if not isinstance(bias_correction, bool):
        raise ValueError(f"bias_correction: expected a bool, got {bias_correction!r}")
    if sensitivity_budget is not None and (
        isinstance(sensitivity_budget, bool)
        or not isinstance(sensitivity_budget, (int, float))
        or not sensitivity_budget >= 0
    ):
        raise ValueError(
            f"sensitivity_budget: expected a non-negative number or None, got "
            f"{sensitivity_budget!r}"
        )
    if sensitivity_metric not in SENSITIVITY_METRICS:
        raise ValueError(
            f"sensitivity_metric: unknown {sensitivity_metric!r}, expected one of "
            f"{list(SENSITIVITY_METRICS)}"
        )
    if not isinstance(sensitivity_samples, int) or sensitivity_samples < 1:
        raise ValueError(
            f"sensitivity_samples: expected a positive int, got {sensitivity_samples!r}"
        )
    if qdq_placement is None:
        qdq_placement = "inputs" if quantize_mode == "fp8" else "units"
    if qdq_placement not in QDQ_PLACEMENTS:
        raise ValueError(
            f"qdq_placement: unknown {qdq_placement!r}, expected one of {list(QDQ_PLACEMENTS)}"
        )
    model = load_model(onnx_path)
    fmt = FORMATS.get(quantize_mode)
    needs_opset = 1 if (quantize_mode == "int4" and use_matmul_nbits) else fmt.min_opset
    if high_precision_dtype != "fp32":
        needs_opset = max(needs_opset, 19)  # DequantizeLinear returns fp16/bf16 from opset 19
    current = default_opset(model)
    if current < needs_opset and (not upgrade_opset or current < _MIN_SOURCE_OPSET):
        raise ValueError(
            f"onnx_path: model opset {current} is too old for quantize_mode={quantize_mode!r} "
            f"(needs opset >= {needs_opset}"
            + (")" if upgrade_opset else "; pass upgrade_opset=True to convert it)")
        )
    model, sreport = sanitize(
        model, min_opset=needs_opset, reason=f"quantize_mode={quantize_mode!r}"
    )
    feeds = None
    if quantize_mode != "int4" or method != "rtn":
        feeds = make_feeds(calibration_data, model, batch_size=calibration_batch_size)
    out = Path(output_path) if output_path else default_output_path(onnx_path, "quant")
    result = QuantizeResult(str(out), quantize_mode, method, default_opset(model))
    result.notes.append(
        f"sanitized: {sreport.constants_to_initializers} Constant nodes -> initializers, "
        f"{sreport.folded_nodes} nodes folded, {sreport.folded_batchnorms} BatchNorms folded, "
        f"opset {sreport.opset_from} -> {sreport.opset_to}"
    )
    if quantize_mode == "int4":
        i4 = Int4Report()
        op_types = list(op_types_to_quantize or DEFAULT_INT4_OP_TYPES)
        if use_matmul_nbits and op_types_to_quantize is None:
            op_types = ["MatMul", "Gemm"]  # Gather would need opset 21 DequantizeLinear
        targets = plan_int4(model, op_types, nodes_to_exclude, i4)
        apply_int4(model, targets, block_size, method, feeds, use_matmul_nbits, i4)
        result.quantized_nodes, result.skipped = i4.quantized_nodes, i4.skipped
    else:
        if fold_conv_affine:
            folded = fold_affine.fold_conv_affine(model)
            result.notes.append(f"folded {folded} constant Mul/Add into the preceding Conv")
        if fuse_activations:
            model, fused = fuse_hardswish(model)
            result.notes.append(f"rewrote {fused} x*Clip(x+3,0,6)/6 chains as HardSwish")
            result.opset = default_opset(model)
        report = QdqReport()
        _quantize_qdq(
            model,
            QdqOptions(
                list(op_types_to_quantize or DEFAULT_OP_TYPES),
                nodes_to_exclude,
                method,
                percentile,
                disable_mha_qdq,
                skip_sensitive_nodes,
                act_name,
                qdq_placement,
                sensitivity_metric,
                sensitivity_samples,
                bias_correction,
                sensitivity_budget,
            ),
            feeds or [],
            report,
            result,
        )
        result.quantized_nodes, result.skipped = report.quantized_nodes, report.skipped
    remove_unused_initializers(model)
    if high_precision_dtype != "fp32":
        from modeloptim.onnx.autocast import convert_model

        model, ac = convert_model(model, high_precision_dtype, feeds or [], keep_io_types=True)
        result.notes.append(
            f"autocast to {high_precision_dtype}: kept {len(ac.kept)} nodes in fp32"
        )
    save_model_atomic(model, out)
    if isinstance(onnx_path, (str, os.PathLike)):
        result.input_bytes = Path(onnx_path).stat().st_size
    result.output_bytes = out.stat().st_size
    return result


@dataclass(frozen=True)
class QdqOptions:
    """The int8/fp8 settings of one :func:`quantize` call."""

    op_types: list[str]
    nodes_to_exclude: Sequence[str] | None
    method: str
    percentile: float
    disable_mha_qdq: bool
    skip_sensitive_nodes: int
    activation_type: str
    placement: str
    sensitivity_metric: str = "local"
    sensitivity_samples: int = 4
    bias_correction: bool = False
    sensitivity_budget: float | None = None


def _quantize_qdq(model, opts: QdqOptions, feeds, report: QdqReport, result) -> None:
    """Plan, calibrate and insert Q/DQ for int8/fp8 (``model`` changed in place)."""
    fmt = FORMATS.get(result.quantize_mode)
    act = ACTIVATION_TYPES.get(opts.activation_type)
    plan = plan_qdq(
        model,
        opts.op_types,
        opts.nodes_to_exclude,
        float_tensor_names(model),
        report,
        opts.disable_mha_qdq,
    )
    units = opts.placement == "units"
    fold_act = act.name == "uint8"  # Relu/Clip fold into Q only with an asymmetric range
    # Calibrate every tensor output placement could add, before sensitivity shrinks the plan.
    candidates = add_output_qdq(model, _shallow(plan), fold_act) if units else []
    calib = run_calibration(
        model,
        [*plan.activation_names(), *candidates],
        feeds,
        opts.method,
        opts.percentile,
        act.name,
    )
    ranges = calib.ranges()
    # Output Qs exist for the runtime's fusion and feed float ops: keep their full observed
    # range (histogram methods clipping a Conv output measured magika 0.807 -> 0.0 agreement).
    inputs = set(plan.activation_names())
    ranges.update(
        {t: (calib.low[t], calib.high[t]) for t in candidates if t not in inputs and t in calib.low}
    )
    ranges = narrow_ranges(model, ranges)
    qparams = {t: act.params(lo, hi) for t, (lo, hi) in ranges.items()}
    if opts.skip_sensitive_nodes or opts.sensitivity_budget is not None:
        if opts.sensitivity_metric == "output":

            def quantize_only(copy, sub: QdqPlan) -> None:
                if units:
                    add_output_qdq(copy, sub, fold_act)
                apply_qdq(copy, sub, calib.amax(), fmt, QdqReport(), qparams)

            scores = output_sensitivity(
                model, plan, quantize_only, feeds[: opts.sensitivity_samples]
            )
        else:
            scores = node_sensitivity(
                model, plan, calib.amax(), fmt, feeds[: opts.sensitivity_samples], act, qparams
            )
        result.sensitivity = scores
        count = opts.skip_sensitive_nodes
        if opts.sensitivity_budget is not None:
            count = budget_count(scores, opts.sensitivity_budget, count or None)
        worst = drop_sensitive(plan, scores, count, report)
        result.notes.append(f"kept float (most sensitive): {worst}")
    if units:
        outs = add_output_qdq(model, plan, fold_act)
        result.notes.append(f"quantized {len(outs)} op outputs (DQ -> op -> Q units)")
    if opts.bias_correction:
        shifts = correct_biases(model, plan, fmt, act, qparams, feeds)
        result.notes.append(f"bias correction on {len(shifts)} nodes")
    apply_qdq(model, plan, calib.amax(), fmt, report, qparams)
    result.notes.append(f"activations: {act.name}")


def _shallow(plan: QdqPlan) -> QdqPlan:
    return QdqPlan(
        {t: list(u) for t, u in plan.activations.items()}, list(plan.weights), list(plan.nodes)
    )


def _validate_activation(mode: str, activation_type: str | None) -> str:
    # The first entry is the default (see ``activation_type`` in :func:`quantize`).
    allowed = {"int8": ["uint8", "int8"], "fp8": ["fp8"], "int4": []}[mode]
    if activation_type is None:
        return allowed[0] if allowed else ""
    if activation_type not in allowed:
        raise ValueError(
            f"activation_type: {activation_type!r} is not available for quantize_mode={mode!r}, "
            f"expected one of {allowed}"
        )
    return activation_type


def run_calibration(
    model,
    names: Sequence[str],
    feeds,
    method: str,
    percentile: float = 99.99,
    activation_type: str = "int8",
    cache_bytes: int = CALIBRATION_CACHE_BYTES,
) -> Calibrator:
    """Run ``feeds`` through ``model`` observing ``names``; returns the filled calibrator.

    ``activation_type`` tells ``entropy`` how many levels a never-negative tensor gets
    (``uint8``: 256 over ``[0, amax]``; otherwise 128 per sign). Methods with two passes
    (histograms) keep the first pass's tensors when they total at most ``cache_bytes`` and
    feed them to the second pass instead of running the model again (same values).
    """
    kwargs: dict[str, Any] = {}
    if method == "percentile":
        kwargs["percentile"] = percentile
    elif method == "entropy" and activation_type == "uint8":
        kwargs["unsigned_levels"] = 256
    from tqdm.auto import tqdm

    calib = CALIBRATORS.create(method, **kwargs)
    names = list(dict.fromkeys(names))
    if not names:
        return calib
    # Later passes see the same tensors as the first: keep them (up to a memory budget)
    # instead of running onnxruntime again.
    cache = _CaptureCache(cache_bytes if calib.passes > 1 else 0)
    for pass_index in range(calib.passes):

        def observe(values, pass_index=pass_index):
            for name, value in values.items():
                calib.observe(name, value, pass_index)
            if pass_index == 0:
                cache.add(values)

        progress = f"calibrate {method} pass {pass_index + 1}"
        if pass_index > 0 and cache.complete:
            for values in tqdm(cache.values, desc=progress + " (kept tensors)"):
                observe(values)
        else:
            run_capture(model, names, feeds, observe, progress=progress, spin=False)
    return calib


class _CaptureCache:
    """The captured tensors of a calibration pass while they fit in ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.values: list[dict[str, Any]] = []
        self.complete = budget > 0

    def add(self, values: dict[str, Any]) -> None:
        """Keep ``values`` (name -> array) or, past the budget, drop everything kept."""
        if not self.complete:
            return
        self.used += sum(int(getattr(v, "nbytes", 0)) for v in values.values())
        if self.used > self.budget:
            self.values, self.complete = [], False
        else:
            self.values.append(values)


def calibrate_activations(
    model, names: Sequence[str], feeds, method: str, percentile: float = 99.99
) -> dict[str, float]:
    """Run ``feeds`` through ``model`` and return the calibrated amax of each tensor."""
    return run_calibration(model, names, feeds, method, percentile).amax()
