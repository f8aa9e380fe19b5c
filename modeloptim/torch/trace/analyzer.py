"""Walk the traced graphs and tie the symbols that must stay equal."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from modeloptim.torch.trace import processors as _processors  # noqa: F401  (registers)
from modeloptim.torch.trace import rules as _rules  # noqa: F401  (registers)
from modeloptim.torch.trace.context import AnalysisContext
from modeloptim.torch.trace.processors.modules import ModuleRuleProcessor
from modeloptim.torch.trace.processors.registry import PROCESSORS
from modeloptim.torch.trace.result import AnalysisResult
from modeloptim.torch.trace.symbols import SymMap
from modeloptim.torch.trace.tracer import GraphCollection, call_values

_RULE = ModuleRuleProcessor()


class _Recorder(fx.Interpreter):
    """Runs a graph and keeps shape-only copies of every node's value."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.values[n] = tree_map(
            lambda x: x.detach().to("meta") if isinstance(x, torch.Tensor) else x, result
        )
        return result


@torch.no_grad()
def propagate(gm: fx.GraphModule, bound: inspect.BoundArguments | None) -> dict[fx.Node, Any]:
    """Shapes (as meta tensors) and Python values of every node of ``gm``."""
    values = call_values(bound)
    args = []
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            name = str(n.target).lstrip("*")
            args.append(values[name] if name in values else (n.args[0] if n.args else None))
    rec = _Recorder(gm)
    rec.run(*args)
    return rec.values


def analyze_symbols(
    model: nn.Module, gc: GraphCollection, sym_map: SymMap, *, progress: bool = False
) -> AnalysisResult:
    """Tie the shape symbols of ``model`` across layers.

    Every graph of ``gc`` is run once on the example inputs given to `recursive_trace` (to
    learn shapes), then each node's processor ties the channel layouts of its operands.
    What no processor understands, model inputs/outputs and failed modules are frozen.

    Args:
        model: the model ``gc`` was traced from.
        gc: its graphs (from ``recursive_trace(model, example_inputs=...)``).
        sym_map: `SymInfo` of its registered modules.
        progress: show a tqdm bar over graph nodes.

    Returns:
        The queryable `AnalysisResult`.
    """
    if gc.model is not model:
        raise ValueError("gc: this GraphCollection was traced from a different model")
    if id(model) not in gc.calls:
        raise ValueError(
            "gc: trace with recursive_trace(model, example_inputs=(args, kwargs)) "
            "so that shapes can be propagated"
        )
    ctx = AnalysisContext(model, sym_map)
    total = sum(len(gc.graph_module(m).graph.nodes) for _, m in gc)
    bar = tqdm(total=total, desc="analyzing", unit="node", disable=not progress, leave=False)
    for name, m in gc:
        gm = gc.graph_module(m)
        try:
            values = propagate(gm, gc.calls.get(id(m)))
        except Exception as err:
            raise RuntimeError(
                f"running the traced graph of {name or '<root>'} failed: "
                f"{type(err).__name__}: {err}"
            ) from err
        ctx.begin_graph(gm, name, values, leaf_root=gc.is_leaf_root(m))
        where = "the model" if m is model else f"{name} (traced on its own)"
        for node in gm.graph.nodes:
            _process(ctx, gc, node, where)
            bar.update()
    bar.close()
    for name, m, msg in gc.named_failed():
        for pname, p in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
            ctx.freeze(
                ctx.tensor_layout(p, f"{name}.{pname}"),
                f"used by {name}, which failed to trace: {msg}",
            )
    return AnalysisResult(ctx, gc)


def _process(ctx: AnalysisContext, gc: GraphCollection, node: fx.Node, where: str) -> None:
    val = ctx.val.get(node)
    if node.op == "placeholder":
        ctx.desc[node] = ctx.fresh(val, f"input '{node.target}' of {where}")
        return
    if node.op == "output":
        for a in node.all_input_nodes:
            ctx.freeze(ctx.desc.get(a), f"output of {where}")
        return
    if node.op == "get_attr":
        assert ctx.gm is not None
        attr = _get_attr(ctx.gm, str(node.target))
        ctx.desc[node] = (
            ctx.tensor_layout(attr, ctx.qualname(str(node.target)))
            if isinstance(attr, torch.Tensor)
            else None
        )
        return
    module = ctx.module(str(node.target)) if node.op == "call_module" else None
    try:
        if module is not None and module in ctx.sym_map:
            _RULE(ctx, node)
        elif module is not None and gc.is_failed(module):
            ctx.boundary(node, f"module failed to trace ({gc.failure_msg(module)})")
            _freeze_params(ctx, module, "failed to trace")
        else:
            proc = PROCESSORS.for_node(node, module)
            if proc is not None:
                proc(ctx, node)
            elif not _touches_tensors(ctx, node):
                ctx.desc[node] = None
                ctx.derived[node] = any(bool(ctx.is_derived(a)) for a in node.all_input_nodes)
            else:
                what = type(module).__name__ if module is not None else _target_name(node)
                ctx.boundary(node, f"unknown op {what}")
                if module is not None:
                    _freeze_params(ctx, module, f"unknown module type {what}")
    except Exception as err:  # a processor met a case it does not handle: stay safe
        ctx.boundary(node, f"analysis of this op failed ({type(err).__name__}: {err})")
    if node not in ctx.desc:
        ctx.desc[node] = ctx.fresh(val, f"no layout for {node.name}")


def _freeze_params(ctx: AnalysisContext, module: nn.Module, why: str) -> None:
    for pname, p in [*module.named_parameters(), *module.named_buffers()]:
        ctx.freeze(ctx.tensor_layout(p, pname), f"{pname} of a module that {why}")


def _touches_tensors(ctx: AnalysisContext, node: fx.Node) -> bool:
    def has(x: Any) -> bool:
        if isinstance(x, torch.Tensor):
            return True
        if isinstance(x, tuple | list):
            return any(has(v) for v in x)
        return False

    return has(ctx.val.get(node)) or any(has(ctx.val.get(a)) for a in node.all_input_nodes)


def _target_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__qualname__", getattr(t, "__name__", str(t)))


def _get_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
