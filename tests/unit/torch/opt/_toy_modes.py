"""Toy modes for the mode/state tests, in their own registry (MODES stays untouched).

Loaded by file path both by the tests and by the fresh-process restore check.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from modeloptim.torch.opt import ModeRegistry

TOY = ModeRegistry("toy")


class ScaledLinear(nn.Linear):
    """A Linear whose output is multiplied by a per-feature buffer."""

    def forward(self, x):
        return super().forward(x) * self.out_scale


class ScaleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    init: float = 1.0


def _scale(model, cfg):
    names = []
    for name, m in model.named_modules():
        if type(m) is nn.Linear:
            m.__class__ = ScaledLinear
            m.register_buffer("out_scale", torch.full((m.out_features,), cfg.init))
            names.append(name)
    return model, {"layers": names}


def _restore_scale(model, cfg, metadata):
    out, meta = _scale(model, cfg)
    if meta["layers"] != metadata["layers"]:
        raise RuntimeError(f"layers differ: {meta['layers']} vs {metadata['layers']}")
    return out


class FreezeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _freeze(model, cfg):
    for p in model.parameters():
        p.requires_grad_(False)
    return model, {}


TOY.register("scale", ScaleConfig, restore=_restore_scale, next_modes={"freeze", "scale"})(_scale)
TOY.register("freeze", FreezeConfig, next_modes=set())(_freeze)


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
