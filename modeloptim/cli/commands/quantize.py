"""``modeloptim quantize``: quantize a causal LM and report perplexity, memory and timings.

With no arguments it quantizes the built-in SmolLM2-135M to FP8, calibrating on one half of
the standard library's docstrings and measuring perplexity on the other half. ``--text FILE``
uses the file instead (first half calibrates, second half evaluates).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modeloptim.cli.common import (
    StageTimer,
    add_command,
    check_text_file,
    format_seconds,
    model_label,
    positive_int,
    print_json,
    print_table,
    token_forward_loop,
)
from modeloptim.cli.lm import add_model_arguments, load_lm, weight_memory
from modeloptim.cli.main import CliError

# weight_memory lives in cli.lm (shared by the LM commands); still importable from here.
__all__ = ["FORMATS", "register", "run_quantize", "weight_memory"]

#: ``--format`` choice -> preset name.
FORMATS: dict[str, str] = {
    "fp8": "FP8_DEFAULT_CFG",
    "int8": "INT8_DEFAULT_CFG",
    "int8_wo": "INT8_WEIGHT_ONLY_CFG",
    "int8_sq": "INT8_SMOOTHQUANT_CFG",
    "int4_awq": "INT4_AWQ_CFG",
    "int4": "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    "nvfp4": "NVFP4_DEFAULT_CFG",
    "nvfp4_awq": "NVFP4_AWQ_LITE_CFG",
    "mxfp8": "MXFP8_DEFAULT_CFG",
    "w4a8_awq": "W4A8_AWQ_BETA_CFG",
}

EXAMPLE = """\
examples:
  modeloptim quantize                          # SmolLM2-135M, FP8, before/after report
  modeloptim quantize --format int8_wo --json  # INT8 weight-only, report as JSON
  modeloptim quantize --model ./my_llama --format nvfp4 --text notes.txt --output out/
"""


def register(subparsers: Any) -> None:
    """Add the ``quantize`` subcommand."""
    p = add_command(
        subparsers,
        "quantize",
        help="quantize a causal LM and report perplexity, memory and time",
        description=__doc__,
        epilog=EXAMPLE,
    )
    add_model_arguments(p)
    p.add_argument(
        "--format", choices=sorted(FORMATS), default="fp8", help="quantization format (default fp8)"
    )
    p.add_argument(
        "--calib-size",
        type=positive_int,
        default=8,
        help="calibration windows of --seq-len tokens (default 8)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="directory to save the quantized model (mto.save file modelopt.pth) and its config",
    )
    p.set_defaults(func=run_quantize)


def _check_args(args: argparse.Namespace) -> Any:
    """Validate everything cheap before the model loads; returns the parsed config."""
    import modeloptim.torch.quantization as mtq

    check_text_file(args.text)
    out = args.output
    if out is not None and out.exists():
        if not out.is_dir():
            raise CliError(f"--output: {str(out)!r} exists and is not a directory")
        if any(out.iterdir()) and not (out / "quant_config.json").is_file():
            # The folder is replaced as a whole: never delete unrelated files.
            raise CliError(
                f"--output: {str(out)!r} is a non-empty folder not written by quantize; "
                "choose a new or empty folder"
            )
    config = mtq.QuantizeConfig.parse(mtq.get_preset(FORMATS[args.format]))
    mtq.calibration_algorithms.get(config.algorithm.method)  # NotImplementedError: one line
    return config


def report_header(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """First fields of the quantize/export reports: model, format, preset, algorithm."""
    return {
        "model": model_label(args.model),
        "format": args.format,
        "preset": FORMATS[args.format],
        "algorithm": config.algorithm.method,
    }


def run_quantize(args: argparse.Namespace) -> int:
    """Run ``modeloptim quantize``; prints the report, returns the exit code."""
    import modeloptim.torch.quantization as mtq
    from modeloptim.torch.utils.perplexity import perplexity

    config = _check_args(args)
    timer = StageTimer()
    with timer.stage("load"):
        lm = load_lm(args, calib_size=args.calib_size, evaluate=True)
    model, calib, evalw = lm.model, lm.calib, lm.eval
    memory_before = weight_memory(model)
    with timer.stage("eval_before"):
        ppl_before = perplexity(model, evalw, progress=True)

    with timer.stage("quantize"):
        mtq.quantize(model, config, token_forward_loop(calib))
    with timer.stage("eval_after"), mtq.cache_quantized_weights(model):
        ppl_after = perplexity(model, evalw, progress=True)
    rows = mtq.print_quant_summary(model, print_table=False)
    layers = sorted({r["module"] for r in rows if r["enabled"]})
    if args.output is not None:
        from modeloptim.utils.io import atomic_dir

        with timer.stage("save"), atomic_dir(args.output) as tmp:  # all or nothing
            import modeloptim.torch.opt as mto

            mto.save(model, tmp / "modelopt.pth")  # weights + quantizer state, mto.restore-able
            meta = {"model": args.model, "format": args.format, "preset": FORMATS[args.format]}
            (tmp / "quant_config.json").write_text(json.dumps(meta, indent=2))
    report = {
        **report_header(args, config),
        "layers_quantized": len(layers),
        "calib_tokens": int(calib.numel()),
        "eval_tokens": int(evalw.numel()),
        "perplexity_before": ppl_before,
        "perplexity_after": ppl_after,
        "weight_mb_before": memory_before["megabytes"],
        "weight_mb_after": weight_memory(model)["megabytes"],
        "effective_bits_before": memory_before["effective_bits"],
        "effective_bits_after": weight_memory(model)["effective_bits"],
        "seconds": timer.with_total(),
        "output": None if args.output is None else str(args.output),
    }
    print_report(report, args.json)
    return 0


def print_report(report: dict[str, Any], as_json: bool) -> None:
    """Print the report as JSON or as a before/after table."""
    if as_json:
        print_json(report)
        return
    rows = [
        (label, f"{report[key + '_before']:{spec}}", f"{report[key + '_after']:{spec}}")
        for label, key, spec in (
            ("perplexity", "perplexity", ".3f"),
            ("weight memory (MB)", "weight_mb", ".1f"),
            ("effective bits/weight", "effective_bits", ".2f"),
        )
    ]
    notes = [
        f"preset {report['preset']} (algorithm {report['algorithm']}), "
        f"{report['layers_quantized']} layers quantized, calibration {report['calib_tokens']} "
        f"tokens, evaluation {report['eval_tokens']} tokens",
        "time (s): " + format_seconds(report["seconds"]),
    ]
    if report.get("output"):
        notes.append(f"saved to {report['output']}")
    print_table(
        f"modeloptim quantize: {report['model']} -> {report['format']}",
        ("metric", "before", "after"),
        rows,
        notes,
    )
