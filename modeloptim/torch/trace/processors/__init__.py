"""Node processors (importing this package registers them)."""

from modeloptim.torch.trace.processors import guards, joins, pointwise, reductions, shape_ops
from modeloptim.torch.trace.processors.registry import PROCESSORS, NodeProcessor

__all__ = ["PROCESSORS", "NodeProcessor", "guards", "joins", "pointwise", "reductions", "shape_ops"]
