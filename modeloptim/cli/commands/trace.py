"""``modeloptim trace``: dependency report of a model's tied channels."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from modeloptim.cli.common import add_command
from modeloptim.cli.model_spec import add_model_spec_arguments, load_model_spec

EXAMPLE = """examples:
  modeloptim trace --model resnet                 # built-in zoo model (random weights)
  modeloptim trace --model smollm2-config --json  # SmolLM2-135M architecture
  modeloptim trace --model mypkg.models:make_net --input-shape 1,3,32,32
"""


def register(sub: Any) -> None:
    """Add the ``trace`` subcommand."""
    p = add_command(
        sub,
        "trace",
        help="report which channels/heads/hidden sizes are tied",
        description="Trace a model with torch.fx and report its dependency "
        "groups: what can be pruned together, and why the rest is frozen.",
        epilog=EXAMPLE,
    )
    add_model_spec_arguments(p, "resnet, llama-tiny, smollm2-config")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the model, analyze it, print the report."""
    from modeloptim.torch.trace.report import trace_report

    print(f"building {args.model} ...", file=sys.stderr, flush=True)
    model, example = load_model_spec(args.model, args.input_shape)
    report = trace_report(model, example, progress=True)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.to_text())
    return 0
