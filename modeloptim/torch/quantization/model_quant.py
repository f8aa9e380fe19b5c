"""User entry points: ``quantize``, ``calibrate``, enable/disable, summary, fold, postprocess.

Every check (config, algorithm, model, forward loop) runs before the model is touched. If
anything fails after conversion started (a bad pattern combination, a forward loop that
raises...), the converted layers are turned back into their original classes and the error
propagates: the model is left as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from modeloptim.torch.opt.state import ModeloptStateManager, apply_mode
from modeloptim.torch.quantization import mode as _mode  # noqa: F401  (registers the modes)
from modeloptim.torch.quantization.algorithms import AlgorithmSpec, calibration_algorithms
from modeloptim.torch.quantization.algorithms.registry import AlgorithmConfig, ForwardLoop
from modeloptim.torch.quantization.config.presets import get_preset
from modeloptim.torch.quantization.config.quantize import QuantizeConfig
from modeloptim.torch.quantization.conversion import (
    Pattern,
    is_quantized,
    named_quantizers,
    named_tensor_quantizers,
    set_quantizer_enabled,
)
from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule
from modeloptim.torch.quantization.nn.modules.tensor_quantizer import TensorQuantizer

__all__ = [
    "calibrate",
    "disable_quantizer",
    "enable_quantizer",
    "fold_weight",
    "postprocess_amax",
    "print_quant_summary",
    "quantize",
    "weight_quantizer_ids",
]

QuantizeConfigLike = QuantizeConfig | dict[str, Any] | str


def _parse_config(config: QuantizeConfigLike) -> QuantizeConfig:
    if isinstance(config, str):
        return QuantizeConfig.parse(get_preset(config))
    return QuantizeConfig.parse(config)


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_meta:
            raise ValueError(
                f"model: tensor {name!r} is on the meta device (no data); load or "
                "materialize the weights (e.g. model.to_empty(...) + load_state_dict) first"
            )


def _check_forward_loop(forward_loop: Any) -> None:
    if forward_loop is not None and not callable(forward_loop):
        raise TypeError(
            "forward_loop: expected a callable forward_loop(model) or None, got "
            f"{type(forward_loop).__name__}"
        )


def weight_quantizer_ids(model: nn.Module) -> set[int]:
    """``id()`` of every TensorQuantizer that quantizes a layer's weight."""
    ids: set[int] = set()
    for layer in model.modules():
        if isinstance(layer, QuantModule):
            for wq, _ in layer.weight_quantizer_pairs():
                ids.update(id(q) for q in (wq if isinstance(wq, nn.Sequential) else [wq]))
    return ids


def _needs_data(model: nn.Module) -> list[str]:
    """Enabled activation quantizers that need a calibrated amax (static, not weights)."""
    weights = weight_quantizer_ids(model)
    return [
        name
        for name, q in named_tensor_quantizers(model)
        if q.is_enabled and q._calibrator is not None and id(q) not in weights and q.amax is None
    ]


def _run(
    model: nn.Module, spec: AlgorithmSpec, algo: AlgorithmConfig, forward_loop: ForwardLoop | None
) -> None:
    if forward_loop is None and spec.name != "none":
        missing = _needs_data(model)
        if missing or spec.needs_forward_loop:
            raise ValueError(
                f"forward_loop: algorithm {spec.name!r} needs calibration data for "
                f"{len(missing)} activation quantizer(s) (e.g. {missing[:3]}); pass "
                "forward_loop(model) or disable them"
            )
    spec.fn(model, forward_loop, algo)


def quantize(
    model: nn.Module, config: QuantizeConfigLike, forward_loop: ForwardLoop | None = None
) -> nn.Module:
    """Quantize ``model`` in place: convert layers, apply ``quant_cfg``, calibrate.

    Args:
        model: any ``nn.Module``; registered layers (Linear, Conv, ...) get quantizers.
        config: a preset dict (``mtq.INT8_DEFAULT_CFG``), its name (``"INT8_DEFAULT_CFG"``),
            a ModelOpt-style dict or a :class:`QuantizeConfig`.
        forward_loop: ``forward_loop(model)`` runs calibration batches; may be ``None`` when
            only weights or dynamic formats are quantized.

    Returns:
        ``model`` itself, quantized.

    Raises:
        ValueError: bad config/model/data (nothing changed).
        NotImplementedError: the config's algorithm is not built yet (nothing changed).
    """
    cfg = _parse_config(config)
    spec = calibration_algorithms.get(cfg.algorithm.method)
    _check_model(model)
    _check_forward_loop(forward_loop)
    if is_quantized(model):
        raise ValueError(
            "model: already quantized; use mtq.calibrate to re-calibrate or "
            "set_quantizer_by_cfg to change quantizers"
        )
    # The conversion is the "quantize" mode (recorded for mto.save/restore); the mode order is
    # checked before anything changes.
    apply_mode(model, [("quantize", cfg)])
    converted = [n for n, m in model.named_modules() if isinstance(m, QuantModule)]
    try:
        if not converted:
            warnings.warn(
                "model: no layer of a registered type was found; nothing is quantized",
                UserWarning,
                stacklevel=2,
            )
        _run(model, spec, cfg.algorithm, forward_loop)
    except BaseException:
        for name in reversed(converted):
            layer = model.get_submodule(name)
            if isinstance(layer, QuantModule):
                layer.export()
        ModeloptStateManager(model).pop()
        raise
    return model


@contextmanager
def _restore_quantizers_on_error(model: nn.Module) -> Iterator[None]:
    saved = [
        (q, None if q.amax is None else q.amax.detach().clone(), q._if_quant, q._if_calib)
        for _, q in named_tensor_quantizers(model)
    ]
    try:
        yield
    except BaseException:
        for q, amax, if_quant, if_calib in saved:
            q.amax = amax
            q._if_quant, q._if_calib = if_quant, if_calib
        raise


def calibrate(
    model: nn.Module,
    algorithm: str | dict[str, Any] | None = "max",
    forward_loop: ForwardLoop | None = None,
) -> nn.Module:
    """(Re-)calibrate an already quantized model; on error the old amax values are kept.

    Args:
        model: a model returned by :func:`quantize`.
        algorithm: ``"max"``, ``None`` or ``{"method": ..., options}``.
        forward_loop: runs calibration batches through ``model``.
    """
    algo = calibration_algorithms.parse(algorithm)
    spec = calibration_algorithms.get(algo.method)
    _check_model(model)
    _check_forward_loop(forward_loop)
    if not is_quantized(model):
        raise ValueError("model: not quantized; call mtq.quantize(model, config, forward_loop)")
    apply_mode(model, [("calibrate", {"algorithm": algo})])
    try:
        with _restore_quantizers_on_error(model):
            _run(model, spec, algo, forward_loop)
    except BaseException:
        ModeloptStateManager(model).pop()
        raise
    return model


def disable_quantizer(model: nn.Module, wildcard_or_filter_func: Pattern) -> int:
    """Disable every quantizer whose name matches (wildcard or predicate); returns the count."""
    return set_quantizer_enabled(model, wildcard_or_filter_func, False)


def enable_quantizer(model: nn.Module, wildcard_or_filter_func: Pattern) -> int:
    """Enable every quantizer whose name matches (wildcard or predicate); returns the count."""
    return set_quantizer_enabled(model, wildcard_or_filter_func, True)


def _shared_parameter_ids(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, n in seen.items() if n > 1}


@torch.no_grad()
def fold_weight(model: nn.Module) -> int:
    """Write fake-quantized weights into the weights and disable their weight quantizers.

    Weights shared with another layer (tied embeddings) are skipped with a warning, because
    folding would also change the other layer.

    Returns:
        The number of weight tensors folded.
    """
    shared = _shared_parameter_ids(model)
    folded = 0
    for name, layer in model.named_modules():
        if not isinstance(layer, QuantModule):
            continue
        pairs = [(q, w) for q, w in layer.weight_quantizer_pairs() if q.is_enabled]
        if any(id(w) in shared for _, w in pairs):
            warnings.warn(f"fold_weight: {name!r} shares its weight; not folded", stacklevel=2)
            continue
        for quantizer, weight in pairs:
            out = quantizer(weight)
            weight.copy_(out.dequantize() if hasattr(out, "dequantize") else out)
            folded += 1
        for quantizer, _ in pairs:
            quantizer.disable()
    return folded


def postprocess_amax(
    model: nn.Module, key: Pattern, postprocess_fn: Callable[[torch.Tensor], torch.Tensor]
) -> int:
    """Replace ``amax`` by ``postprocess_fn(amax)`` for quantizers matching ``key``.

    Returns:
        The number of quantizers changed.
    """
    from modeloptim.torch.quantization.conversion import quantizer_matches

    count = 0
    for name, quantizer, layer in named_quantizers(model):
        members = list(quantizer) if isinstance(quantizer, nn.Sequential) else [quantizer]
        if not quantizer_matches(key, name, layer):  # its own name or an alias (MoE experts)
            continue
        for q in members:
            if isinstance(q, TensorQuantizer) and q.amax is not None:
                q.amax = postprocess_fn(q.amax)
                count += 1
    if count == 0:
        warnings.warn(f"key: pattern {key!r} matches no quantizer with an amax", stacklevel=2)
    return count


def _amax_range(q: TensorQuantizer) -> str:
    if q.amax is None:
        return "dynamic" if q._calibrator is None else "-"
    a = q.amax.detach().float()
    if a.numel() == 1:
        return f"{a.item():.4g}"
    return f"[{a.min().item():.4g}, {a.max().item():.4g}] x{a.numel()}"


def print_quant_summary(model: nn.Module, print_table: bool = True) -> list[dict[str, Any]]:
    """Print a table of every quantizer (module, quantizer, format, amax range) and return it.

    Args:
        model: a quantized model.
        print_table: print the table (rich) in addition to returning the rows.

    Returns:
        One dict per TensorQuantizer: ``module``, ``quantizer``, ``enabled``, ``format``,
        ``amax`` (a short string), ``amax_shape`` (tuple, or None) and ``alias`` (the
        quantizer's ModelOpt name where it differs, e.g. for MoE experts, else None; shown as
        a column when any quantizer has one).
    """
    from modeloptim.torch.quantization.quantizer_aliases import QUANTIZER_ALIASES

    rows: list[dict[str, Any]] = []
    for name, quantizer, layer in named_quantizers(model):
        module, _, attr = name.rpartition(".")
        alias = ", ".join(a.name for a in QUANTIZER_ALIASES.aliases(name, layer)) or None
        members: list[tuple[str, TensorQuantizer]] = (
            [(f"{attr}[{i}]", q) for i, q in enumerate(quantizer) if isinstance(q, TensorQuantizer)]
            if isinstance(quantizer, nn.Sequential)
            else [(attr, quantizer)]
        )
        for label, q in members:
            rows.append(
                {
                    "module": module,
                    "quantizer": label,
                    "enabled": q.is_enabled,
                    "format": q.format.describe() if q.is_enabled else "disabled",
                    "amax": _amax_range(q) if q.is_enabled else "",
                    "amax_shape": None if q.amax is None else tuple(q.amax.shape),
                    "alias": alias,
                }
            )
    if print_table:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Quantizers ({sum(r['enabled'] for r in rows)} enabled / {len(rows)})")
        cols = ["module", "quantizer", "format", "amax"]
        if any(r["alias"] for r in rows):
            cols.append("alias")
        for col in cols:
            table.add_column(col)
        for r in rows:
            table.add_row(*(r[c] or "" for c in cols))
        Console().print(table)
    return rows
