"""Structured pruning (``import modeloptim.torch.prune as mtp``).

``mtp.prune(model, mode, constraints, dummy_input, config)`` removes channels, attention head
groups, FFN width, hidden size and layers under a FLOPs or parameter budget and returns a plain
``nn.Module`` whose parameters are actually smaller, plus the search state. Modes: ``fastnas``
(magnitude importance + score-driven search, CNNs/ViTs), ``gradnas`` (gradient importance),
``minitron`` (activation importance, LLaMA-family models). The result round-trips through
``mto.save``/``mto.restore``.
"""

from modeloptim.torch.prune import modes as _modes  # noqa: F401  (registers the modes)
from modeloptim.torch.prune.api import prune
from modeloptim.torch.prune.builders import SPACE_BUILDERS, build_space
from modeloptim.torch.prune.importance import IMPORTANCE
from modeloptim.torch.prune.modes import (
    AutoNASConfig,
    FastNASConfig,
    GradNASConfig,
    MinitronConfig,
)
from modeloptim.torch.prune.plan import PrunePlan
from modeloptim.torch.prune.search import ScoreFunctionError, recalibrate_batchnorm
from modeloptim.torch.prune.space import SearchSpace

__all__ = [
    "IMPORTANCE",
    "SPACE_BUILDERS",
    "AutoNASConfig",
    "FastNASConfig",
    "GradNASConfig",
    "MinitronConfig",
    "PrunePlan",
    "ScoreFunctionError",
    "SearchSpace",
    "build_space",
    "prune",
    "recalibrate_batchnorm",
]
