"""Predefined quantization configs with ModelOpt's names and numerics (plain dicts).

Each preset is a plain ``{"quant_cfg": [...], "algorithm": ...}`` dict in the list form (see
:mod:`.quantize`); it is validated into a :class:`~.quantize.QuantizeConfig` when used. Users
may copy and edit them (``copy.deepcopy(mtq.INT8_DEFAULT_CFG)``). All presets disable the same
layers ModelOpt's do (BatchNorm, LeakyReLU, ``lm_head``, MoE routers, output layers) and every
quantizer not addressed (``"default"``). Presets whose algorithm is not built yet (AWQ,
SmoothQuant, SVDQuant) validate; ``quantize`` raises ``NotImplementedError`` for them.

KV-cache presets (``FP8_KV_CFG``, ``NVFP4_KV_CFG``) hold only their own entries: append their
``quant_cfg`` to another preset's (``"default"`` entries always apply first).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PRESETS", "get_preset"]

_NVFP4 = {
    "num_bits": (2, 1),
    "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)},
    "axis": None,
}
_FP8 = {"num_bits": (4, 3), "axis": None}
_INT4_BLOCK128 = {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}}


def _mx(num_bits: int | tuple[int, int]) -> dict[str, Any]:
    return {"num_bits": num_bits, "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}}


def _off(pattern: str, parent_class: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"quantizer_name": pattern, "enable": False}
    if parent_class is not None:
        entry["parent_class"] = parent_class
    return entry


def _on(pattern: str, cfg: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
    return {"quantizer_name": pattern, "cfg": copy.deepcopy(cfg)}


_DISABLED: list[dict[str, Any]] = [
    _off("default"),
    _off("*", "nn.BatchNorm1d"),
    _off("*", "nn.BatchNorm2d"),
    _off("*", "nn.BatchNorm3d"),
    _off("*", "nn.LeakyReLU"),
    _off("*lm_head*"),
    _off("*proj_out.*"),  # Whisper's lm_head
    _off("*block_sparse_moe.gate*"),  # MoE routers
    _off("*router*"),
    _off("*mlp.gate.*"),
    _off("*mlp.shared_expert_gate.*"),
    _off("*linear_attn.conv1d*"),
    _off("*mixer.conv1d*"),
    _off("*output_layer*"),
    _off("output.*"),
]


def _preset(entries: list[dict[str, Any]], algorithm: Any = "max") -> dict[str, Any]:
    return {"quant_cfg": [*entries, *copy.deepcopy(_DISABLED)], "algorithm": algorithm}


def _weight_act(weight: Any, act: Any | None, algorithm: Any = "max") -> dict[str, Any]:
    entries = [_on("*weight_quantizer", weight)]
    entries.append(_on("*input_quantizer", act) if act is not None else _off("*input_quantizer"))
    return _preset(entries, algorithm)


INT8_DEFAULT_CFG = _weight_act({"num_bits": 8, "axis": 0}, {"num_bits": 8, "axis": None})
INT8_SMOOTHQUANT_CFG = _weight_act(
    {"num_bits": 8, "axis": 0}, {"num_bits": 8, "axis": None}, "smoothquant"
)
INT8_WEIGHT_ONLY_CFG = _weight_act({"num_bits": 8, "axis": 0}, None)
FP8_DEFAULT_CFG = _weight_act(_FP8, _FP8)
FP8_PER_CHANNEL_PER_TOKEN_CFG = _weight_act(
    {"num_bits": (4, 3), "axis": 0},
    {"num_bits": (4, 3), "block_sizes": {-1: None, "type": "dynamic"}},
)
FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG = _weight_act(
    {"num_bits": (4, 3), "block_sizes": {-1: 128, -2: 128}}, None
)
INT4_BLOCKWISE_WEIGHT_ONLY_CFG = _weight_act(_INT4_BLOCK128, None)
INT4_AWQ_CFG = _weight_act(_INT4_BLOCK128, None, {"method": "awq_lite", "alpha_step": 0.1})
W4A8_AWQ_BETA_CFG = _weight_act([_INT4_BLOCK128, _FP8], _FP8, "awq_lite")
NVFP4_DEFAULT_CFG = _weight_act(_NVFP4, _NVFP4)
NVFP4_AWQ_LITE_CFG = _weight_act(_NVFP4, _NVFP4, "awq_lite")
NVFP4_AWQ_CLIP_CFG = _weight_act(_NVFP4, _NVFP4, {"method": "awq_clip"})
NVFP4_AWQ_FULL_CFG = _weight_act(_NVFP4, _NVFP4, {"method": "awq_full", "alpha_step": 0.1})
NVFP4_SVDQUANT_DEFAULT_CFG = _weight_act(_NVFP4, _NVFP4, {"method": "svdquant", "lowrank": 32})
W4A16_NVFP4_CFG = _weight_act(_NVFP4, None)
W4A8_NVFP4_FP8_CFG = _weight_act(_NVFP4, _FP8)
MXFP8_DEFAULT_CFG = _weight_act(_mx((4, 3)), _mx((4, 3)), None)
MXFP6_DEFAULT_CFG = _weight_act(_mx((3, 2)), _mx((3, 2)), None)
MXFP4_DEFAULT_CFG = _weight_act(_mx((2, 1)), _mx((2, 1)), None)
MXINT8_DEFAULT_CFG = _weight_act(_mx(8), _mx(8), None)
# "max" (not None): the FP8 per-tensor activations need a calibrated amax.
W4A8_MXFP4_FP8_CFG = _weight_act(_mx((2, 1)), _FP8)
NVFP4_MLP_WEIGHT_ONLY_CFG = _preset(
    [_on("*mlp*weight_quantizer", _NVFP4), _on("*block_sparse_moe*weight_quantizer", _NVFP4)]
)
NVFP4_MLP_ONLY_CFG = _preset(
    [
        _on("*mlp*weight_quantizer", _NVFP4),
        _on("*mlp*input_quantizer", _NVFP4),
        _on("*block_sparse_moe*weight_quantizer", _NVFP4),
        _on("*block_sparse_moe*input_quantizer", _NVFP4),
    ]
)

# KV-cache presets: only their own entries (merge into another preset's quant_cfg).
FP8_KV_CFG: dict[str, Any] = {
    "quant_cfg": [_on("*[kv]_bmm_quantizer", _FP8), _off("default")],
    "algorithm": "max",
}
NVFP4_KV_CFG: dict[str, Any] = {
    "quant_cfg": [_on("*[kv]_bmm_quantizer", _NVFP4), _off("default")],
    "algorithm": "max",
}

PRESETS: dict[str, dict[str, Any]] = {
    name: value for name, value in dict(globals()).items() if name.endswith("_CFG")
}
"""Every preset by its ModelOpt name."""

__all__ += sorted(PRESETS)


def get_preset(name: str) -> dict[str, Any]:
    """Return a deep copy of the preset called ``name`` (e.g. ``"INT8_DEFAULT_CFG"``).

    Raises:
        ValueError: unknown name; the message lists the valid names.
    """
    key = name.upper()
    if not key.endswith("_CFG"):
        key += "_CFG"
    if key not in PRESETS:
        raise ValueError(f"config: unknown preset name {name!r}; expected one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[key])
