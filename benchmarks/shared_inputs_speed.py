"""Graph finder (`shared_input_groups`) vs the runtime finder (baseline), same run, CPU.

Usage: python benchmarks/shared_inputs_speed.py [zoo names...]

For each model: groups found, how many came from the graph, groups with two or more layers,
groups that differ from the runtime finder's (members, producer, foldable), seconds for each
finder and the ratio. Differences are reads through row selections (``h[:, 0]`` before a
pooler or classifier, ``h.view(-1, d)`` in MoE blocks): the runtime finder sees a new tensor
there (no producer), the graph sees the same channels of the producer's output.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from modeloptim.torch.trace import find_shared_input_groups, shared_input_groups, zoo
from modeloptim.torch.trace.api import normalize_example

DEFAULT = ["gpt2", "llama-tiny", "bert", "vit", "smollm2-config"]


def _summary(groups: list[Any]) -> set[tuple[Any, ...]]:
    return {(tuple(sorted(g.names)), g.producer, g.foldable) for g in groups}


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    print(
        f"{'model':<16}{'groups':>7}{'graph':>6}{'multi':>6}{'diff':>6}"
        f"{'graph (s)':>10}{'runtime (s)':>12}{'ratio':>7}"
    )
    for name in names:
        model, example = zoo.build(name)
        args, kwargs = normalize_example(example)

        def run(m: torch.nn.Module, a: Any = args, k: Any = kwargs) -> None:
            m(*a, **k)

        with torch.no_grad():
            graph, t_graph = _timed(
                lambda m=model, a=args, k=kwargs: shared_input_groups(m, (a, k))
            )
            runtime, t_rt = _timed(lambda m=model, r=run: find_shared_input_groups(m, r))
        n_graph = sum(g.source.value == "graph" for g in graph)
        multi = sum(len(g.names) > 1 for g in graph)
        diff = len(_summary(graph) - _summary(runtime))
        print(
            f"{name:<16}{len(graph):>7}{n_graph:>6}{multi:>6}{diff:>6}"
            f"{t_graph:>10.3f}{t_rt:>12.3f}{t_graph / t_rt:>7.1f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
