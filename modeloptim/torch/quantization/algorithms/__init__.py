"""Calibration algorithms: one config class + one registered function per file."""

from modeloptim.torch.quantization.algorithms import awq as _awq  # noqa: F401  (registers)
from modeloptim.torch.quantization.algorithms import gptq as _gptq  # noqa: F401  (registers)
from modeloptim.torch.quantization.algorithms import histogram as _histogram  # noqa: F401
from modeloptim.torch.quantization.algorithms import max as _max  # noqa: F401  (registers)
from modeloptim.torch.quantization.algorithms import none as _none  # noqa: F401  (registers)
from modeloptim.torch.quantization.algorithms import (  # noqa: F401  (registers)
    smoothquant as _smoothquant,
)
from modeloptim.torch.quantization.algorithms.registry import (
    AlgorithmConfig,
    AlgorithmSpec,
    CalibrationAlgorithmRegistry,
    ForwardLoop,
    calibration_algorithms,
)

__all__ = [
    "AlgorithmConfig",
    "AlgorithmSpec",
    "CalibrationAlgorithmRegistry",
    "ForwardLoop",
    "calibration_algorithms",
]
