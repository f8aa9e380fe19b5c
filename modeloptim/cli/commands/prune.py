"""``modeloptim prune``: prune a model to a FLOPs/params budget and report before/after."""

from __future__ import annotations

import argparse
from typing import Any

from modeloptim.cli.common import add_command, print_json, print_table
from modeloptim.cli.model_spec import add_model_spec_arguments, load_model_spec

EXAMPLE = """examples:
  modeloptim prune --model resnet --flops 50%              # zoo model, fastnas, report
  modeloptim prune --model llama-tiny --mode minitron --params 75% --json
  modeloptim prune --model mypkg.nets:make --input-shape 1,3,32,32 --flops 60% -o pruned.pt
"""


def register(sub: Any) -> None:
    """Add the ``prune`` subcommand."""
    p = add_command(
        sub,
        "prune",
        help="structured pruning to a FLOPs/params budget",
        description="Remove channels/heads/FFN width/hidden size under a budget "
        "and print the sizes before and after. Without a score function the "
        "most important channels (by the mode's criterion) are kept.",
        epilog=EXAMPLE,
    )
    add_model_spec_arguments(p, "resnet, mobilenetv2, vit, llama-tiny")
    p.add_argument("--mode", default="fastnas", choices=["fastnas", "gradnas", "minitron"])
    p.add_argument("--flops", default=None, help="FLOPs budget, e.g. 50%% or 1e9")
    p.add_argument("--params", default=None, help="parameter budget, e.g. 75%% or 1e6")
    p.add_argument(
        "--channel-divisor", type=int, default=None, help="chosen widths are multiples of this"
    )
    p.add_argument("-o", "--output", default=None, help="save the pruned model (mto.save)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _budget(text: str, flag: str) -> str | float:
    text = text.strip()
    if text.endswith("%"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{flag}: expected a percentage like 50% or a number, got {text!r}"
        ) from None


def _sizes(model: Any) -> dict[str, list[int]]:
    return {n: list(p.shape) for n, p in model.named_parameters()}


def run(args: argparse.Namespace) -> int:
    """Prune and print the report."""
    if args.flops is None and args.params is None:
        raise ValueError("--flops/--params: give at least one budget")
    constraints: dict[str, Any] = {}
    if args.flops is not None:
        constraints["flops"] = _budget(args.flops, "--flops")
    if args.params is not None:
        constraints["params"] = _budget(args.params, "--params")
    import modeloptim.torch.opt as mto
    import modeloptim.torch.prune as mtp
    from modeloptim.torch.utils.profile import count_flops, count_params

    model, example = load_model_spec(args.model, args.input_shape)
    before = {"params": count_params(model), "flops": count_flops(model, example)}
    old = _sizes(model)
    cfg: dict[str, Any] = {}
    if args.channel_divisor is not None:
        cfg["channel_divisor"] = args.channel_divisor
    search: dict[str, Any] = {}
    if args.mode in ("minitron", "gradnas"):
        search["data_loader"] = [example]  # the example input is the calibration batch
    if args.mode == "gradnas":
        search["loss_func"] = _output_norm_loss
    pruned, state = mtp.prune(model, [(args.mode, cfg)], constraints, example, search)
    after = {"params": count_params(pruned), "flops": count_flops(pruned, example)}
    changed = {n: [old[n], s] for n, s in _sizes(pruned).items() if n in old and old[n] != s}
    if args.output:
        mto.save(pruned, args.output)
    report = {
        "model": args.model,
        "mode": args.mode,
        "constraints": constraints,
        "before": before,
        "after": after,
        "subnet": state["best"]["subnet"],
        "changed_tensors": len(changed),
        "saved_to": args.output,
    }
    if args.json:
        print_json(report)
        return 0
    ratio = (
        "ratio",
        f"{after['params'] / before['params']:.3f}",
        f"{after['flops'] / max(before['flops'], 1):.3f}",
    )
    print_table(
        f"modeloptim prune: {args.model} ({args.mode})",
        ("", "params", "FLOPs"),
        [
            (k, f"{v['params']:,}", f"{v['flops']:,}")
            for k, v in (("before", before), ("after", after))
        ]
        + [ratio],
    )
    notes = [f"saved to {args.output} (restore with mto.restore)"] if args.output else []
    print_table(
        "kept channels per group",
        ("group", "kept"),
        [(name, str(size)) for name, size in state["best"]["subnet"].items()],
        notes,
    )
    return 0


def _output_norm_loss(model: Any, batch: Any) -> Any:
    """Without labels, gradnas ranks channels by their effect on the output's squared norm."""
    from modeloptim.torch.utils.profile import call_model

    out = call_model(model, batch)
    out = getattr(out, "logits", out)
    return (out.float() ** 2).mean()
