"""Algorithm ``None``: no calibration (dynamic formats, or amax set by hand)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from modeloptim.torch.quantization.algorithms.registry import (
    AlgorithmConfig,
    ForwardLoop,
    calibration_algorithms,
)

__all__ = ["NoneCalibConfig", "no_calibrate"]


class NoneCalibConfig(AlgorithmConfig):
    """``algorithm=None``: quantizers keep whatever amax they have."""

    method: Literal["none"] = "none"


@calibration_algorithms.register("none", NoneCalibConfig)
def no_calibrate(model: nn.Module, forward_loop: ForwardLoop | None, config: object) -> None:
    """Do nothing (the forward loop, if any, is not run)."""
