"""``mtq.compress``: replace fake-quantized weights by packed real quantized weights.

After :func:`compress`, each quantized layer keeps its weight as a :class:`CompressedWeight`
submodule (packed codes and scales as buffers, so ``state_dict`` and ``.to()`` work) instead
of a float parameter: memory drops to the format's storage size (e.g. ~4.5 bits per weight
for NVFP4). Reading ``layer.weight`` (as the layer's own ``forward`` does) dequantizes, which
equals the fake-quantized weight exactly; later stages of a sequential weight quantizer (the
FP8 step of W4A8) still apply on top. On CPU the dequantized weight feeds the layer's usual
matmul; on CUDA, packed INT4/NVFP4 linear layers run the W4A16 Triton GEMM/GEMV kernels
(:mod:`.compressed_gemm`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modeloptim.torch.quantization.nn.modules.quant_module import (
    BACKEND_FORWARD,
    QuantLinearConvBase,
    QuantModule,
)
from modeloptim.torch.quantization.qtensor import QTENSOR_TYPES, QTensor

__all__ = [
    "CompressedWeight",
    "compress",
    "compress_layers",
    "is_compressed",
    "restore_layers",
    "weight_nbytes",
]

_CALLBACKS = "_dm_attribute_callbacks"


class CompressedWeight(nn.Module):
    """A packed weight: its :class:`QTensor` tensors as buffers; ``forward()`` dequantizes.

    Buffers: ``data`` (packed codes), one per scale (``scale``, ``block_scale``, ...), and
    ``shape`` (int64 logical shape). The format name, output dtype and format parameters
    travel as ``_extra_state`` in the ``state_dict``.
    """

    def __init__(self, qtensor: QTensor) -> None:
        super().__init__()
        self._extra: dict[str, Any] = {}
        self.set_qtensor(qtensor)

    @property
    def packed_stage(self) -> int:
        """Index of the weight-quantizer stage this packed weight applies (0 unless W4A8...)."""
        return int(self._extra.get("packed_stage", 0))

    def set_qtensor(self, qtensor: QTensor) -> None:
        """Replace the stored tensors with those of ``qtensor``."""
        for name in list(self._buffers):
            del self._buffers[name]
        for name, t in qtensor.state_dict().items():
            self.register_buffer(name, t)
        self._extra = qtensor.extra_state()

    @property
    def qtensor(self) -> QTensor:
        """The packed tensor built from the current buffers (follows ``.to()`` moves)."""
        sd = {k: v for k, v in self._buffers.items() if v is not None}
        return QTensor.from_state_dict(sd, self._extra)

    def forward(self) -> torch.Tensor:
        """Dequantized weight (the exact fake-quantized value), dtype of the original weight."""
        return self.qtensor.dequantize()

    def get_extra_state(self) -> dict[str, Any]:  # noqa: D102
        return dict(self._extra)

    def set_extra_state(self, state: Any) -> None:  # noqa: D102
        if not isinstance(state, dict) or state.get("format") not in QTENSOR_TYPES:
            raise ValueError(f"state: not a compressed weight description: {state!r}")
        self._extra = dict(state)

    def extra_repr(self) -> str:  # noqa: D102
        t = self._buffers.get("shape")
        shape = tuple(t.tolist()) if t is not None else ()
        return f"format={self._extra.get('format')}, shape={shape}"


def _read_compressed(module: nn.Module, stored: Any) -> Any:
    w = stored() if isinstance(stored, CompressedWeight) else stored
    quantizer = module._modules.get("weight_quantizer")
    # Disabled stages are identities; an enabled later stage (W4A8's FP8 step) applies.
    return quantizer(w) if quantizer is not None and quantizer.is_enabled else w


def is_compressed(module: nn.Module) -> bool:
    """Whether ``module`` (a layer) holds a packed weight."""
    return isinstance(module._modules.get("weight"), CompressedWeight)


def compress_layer(module: QuantModule, qtensor: QTensor, used: list[Any]) -> None:
    """Install ``qtensor`` as ``module``'s weight and disable the quantizer stages in ``used``.

    Args:
        module: a quantized layer with a ``weight`` parameter.
        qtensor: its packed weight.
        used: the weight-quantizer stages that ``qtensor`` already applies.
    """
    if tuple(qtensor.shape) != tuple(module._parameters["weight"].shape):  # type: ignore[union-attr]
        raise ValueError(
            f"qtensor: shape {tuple(qtensor.shape)} does not match the layer's weight "
            f"{tuple(module._parameters['weight'].shape)}"  # type: ignore[union-attr]
        )
    from modeloptim.torch.export.packers import leaf_quantizers

    leaves = leaf_quantizers(module._modules.get("weight_quantizer"))
    stage = next((i for i, q in enumerate(leaves) if used and q is used[0]), 0)
    del module._parameters["weight"]
    cw = CompressedWeight(qtensor)
    cw._extra["packed_stage"] = stage
    module._modules["weight"] = cw
    for q in used:
        q.disable()
    getattr(module, _CALLBACKS)["weight"] = _read_compressed
    from modeloptim.torch.quantization.compressed_gemm import (
        BACKEND_WEIGHTS,
        compressed_linear_forward,
    )

    if qtensor.format_name in BACKEND_WEIGHTS and _plain_linear_layer(module):
        module.__dict__[BACKEND_FORWARD] = compressed_linear_forward


def _plain_linear_layer(module: nn.Module) -> bool:
    """A quantized ``nn.Linear`` (or subclass keeping its forward): ``F.linear`` math."""
    original = getattr(module, "_original_cls", None)
    return (
        isinstance(original, type)
        and issubclass(original, nn.Linear)
        and original.forward is nn.Linear.forward
        and type(module).forward is QuantLinearConvBase.forward
    )


def _shared_weight_ids(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, n in seen.items() if n > 1}


def compress_layers(model: nn.Module) -> dict[str, Any]:
    """Pack every quantized layer's weight in place; the work behind the ``compress`` mode.

    Returns:
        Plain-data metadata: for each packed layer, its :meth:`CompressedWeight.
        get_extra_state` and the shape/dtype of every buffer, so that :func:`restore_layers`
        can rebuild empty packed weights for ``load_state_dict`` to fill.

    Raises:
        ValueError: no quantized layer, or a layer's format cannot be packed (nothing is
            changed then).
    """
    from modeloptim.torch.export.packers import leaf_quantizers, pack_weight

    shared = _shared_weight_ids(model)
    plan: list[tuple[str, QuantModule, QTensor, list[Any]]] = []
    for name, module in model.named_modules():
        if not isinstance(module, QuantModule) or is_compressed(module):
            continue
        weight = module._parameters.get("weight")
        quantizer = module._modules.get("weight_quantizer")
        if getattr(module, "weight_is_view", False) and quantizer is not None:
            if quantizer.is_enabled:
                raise ValueError(
                    f"model: layer {name!r} is one expert of a 3-D MoE experts parameter; "
                    "compress packs per-layer weight parameters only (the model is unchanged; "
                    "export_hf_checkpoint writes packed experts)"
                )
            continue
        if weight is None or quantizer is None or not quantizer.is_enabled:
            continue
        if id(weight) in shared:
            continue
        if getattr(module, "weight_transposed", False):
            raise ValueError(
                f"model: layer {name!r} stores its weight [in, out] (HF Conv1D); compress packs "
                "nn.Linear-layout weights only (the model is unchanged)"
            )
        try:
            qt, rest = pack_weight(quantizer, weight)
        except ValueError as err:
            raise ValueError(f"model: layer {name!r}: {err}") from None
        used = [q for q in leaf_quantizers(quantizer) if q.is_enabled and q not in rest]
        plan.append((name, module, qt, used))
    if not plan:
        raise ValueError("model: no quantized layer with an enabled weight quantizer to compress")
    layers: dict[str, Any] = {}
    for name, module, qt, used in plan:
        compress_layer(module, qt, used)
        cw = module._modules["weight"]
        assert isinstance(cw, CompressedWeight)
        layers[name] = {
            "extra": cw.get_extra_state(),
            "buffers": {
                k: [list(v.shape), str(v.dtype).removeprefix("torch.")]
                for k, v in cw._buffers.items()
                if v is not None
            },
        }
    return {"layers": layers}


def restore_layers(model: nn.Module, metadata: dict[str, Any]) -> nn.Module:
    """Give the layers named in ``metadata`` empty packed weights (``load_state_dict`` fills them).

    Raises:
        ValueError: a named layer is missing, not quantized, or has another weight shape.
    """
    from modeloptim.torch.export.packers import leaf_quantizers

    for name, info in metadata["layers"].items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"model: compressed layer {name!r} not found") from None
        if not isinstance(module, QuantModule):
            raise ValueError(f"model: compressed layer {name!r} is not a quantized layer")
        sd = {
            k: torch.zeros(shape, dtype=getattr(torch, dtype))
            for k, (shape, dtype) in info["buffers"].items()
        }
        extra = info["extra"]
        qt = QTensor.from_state_dict(sd, extra)
        weight = module._parameters.get("weight")
        if weight is None:
            raise ValueError(f"model: compressed layer {name!r} has no float weight to replace")
        qt.shape = weight.shape
        leaves = leaf_quantizers(module._modules.get("weight_quantizer"))
        stage = int(extra.get("packed_stage", 0))
        compress_layer(module, qt, leaves[stage : stage + 1])
    return model


def compress(model: nn.Module) -> nn.Module:
    """Pack the weights of every quantized layer in place (``mtq.compress``).

    Recorded as the ``compress`` mode, so ``mto.save`` / ``mto.restore`` give back the
    packed model. It may follow ``quantize`` / ``calibrate``; nothing (no re-calibration) may
    follow it. Layers whose weight quantizer is disabled, and weights shared with another
    module (tied embeddings), stay in float. All layers are checked before any is changed.

    Args:
        model: a model quantized with ``mtq.quantize`` (and calibrated).

    Returns:
        ``model`` itself, with packed weights.

    Raises:
        ValueError: the model has no quantized layer, a layer's format cannot be packed, or
            the model's last mode may not be followed by ``compress`` (nothing is changed).
    """
    from modeloptim.torch.opt.state import apply_mode
    from modeloptim.torch.quantization import mode as _mode  # noqa: F401  (registers modes)

    return apply_mode(model, [("compress", {})])


def weight_nbytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total
