"""Graph tracing and cross-layer dependency analysis.

``dependency_groups(model, example_input)`` lists the groups of channels (hidden size,
conv channels, FFN width, attention heads) that must change together; ``prune_group``
removes channels of one group consistently; ``trace_report`` explains what was frozen and
why. How it works:

- `recursive_trace` runs torch.fx with *shadow execution* (every node also runs on the
  example input), so Python code that only reads shapes is specialized instead of failing;
  modules that still fail become leaves and their children are traced on their own.
- Every tensor dim gets a channel *layout* (`layout.AtomTable`): concatenations of
  row-major products of union-find atoms. Layer rules (`SymMap`) and node processors
  (one class per op family) tie layouts; concat/split/reshape refine atoms instead of
  giving up, so DenseNet offsets, SwiGLU halves, flatten blocks and GQA heads come out.
- ``shared_input_groups(model, example_input)`` groups linear layers by the graph value they
  read (q/k/v, gate/up, experts, any fan-out) with the producer to fold scales into; the
  quantization algorithms and export use it (runtime fallback for untraceable parts).
- Whatever cannot change safely (model inputs/outputs, unknown ops, hard-coded sizes in
  view/expand/split, sizes that decide Python branches) is frozen with a reason.
"""

from modeloptim.torch.trace.analyzer import analyze_symbols
from modeloptim.torch.trace.api import analyze, dependency_groups, register_trace_context
from modeloptim.torch.trace.fixups import register_attr_fixup
from modeloptim.torch.trace.linear_layouts import LINEAR_LAYOUTS, get_weight_2d, set_weight_2d
from modeloptim.torch.trace.report import TraceReport, print_trace_report, trace_report
from modeloptim.torch.trace.result import AnalysisResult, ChannelGroup, GroupMember
from modeloptim.torch.trace.runtime_readers import find_shared_input_groups
from modeloptim.torch.trace.shared_group import GroupSource, SharedInputGroup
from modeloptim.torch.trace.shared_inputs import shared_input_groups
from modeloptim.torch.trace.slicing import prune_group
from modeloptim.torch.trace.symbols import (
    SYM_RULES,
    CLType,
    Symbol,
    SymInfo,
    SymMap,
    SymMapRegistry,
    SymState,
)
from modeloptim.torch.trace.tracer import (
    GraphCollection,
    RobustTracer,
    recursive_trace,
    register_leaf,
    register_trace_forward,
)

__all__ = [
    "LINEAR_LAYOUTS",
    "SYM_RULES",
    "AnalysisResult",
    "CLType",
    "ChannelGroup",
    "GraphCollection",
    "GroupMember",
    "GroupSource",
    "RobustTracer",
    "SharedInputGroup",
    "SymInfo",
    "SymMap",
    "SymMapRegistry",
    "SymState",
    "Symbol",
    "TraceReport",
    "analyze",
    "analyze_symbols",
    "dependency_groups",
    "find_shared_input_groups",
    "get_weight_2d",
    "print_trace_report",
    "prune_group",
    "recursive_trace",
    "register_attr_fixup",
    "register_leaf",
    "register_trace_context",
    "register_trace_forward",
    "set_weight_2d",
    "shared_input_groups",
    "trace_report",
]
