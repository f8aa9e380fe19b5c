"""``modeloptim quantize``: quantize a causal LM and report perplexity, memory and timings.

With no arguments it quantizes the built-in SmolLM2-135M to FP8, calibrating on one half of
the standard library's docstrings and measuring perplexity on the other half. ``--text FILE``
uses the file instead (first half calibrates, second half evaluates).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modeloptim.cli.main import CliError

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


class StageTimer:
    """Wall time per named stage (seconds)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block under ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``quantize`` and ``eval``: model, text, evaluation size, JSON."""
    parser.add_argument(
        "--model", default=None, help="local HF model folder (default: built-in SmolLM2-135M)"
    )
    parser.add_argument(
        "--text",
        type=Path,
        default=None,
        help="UTF-8 text; first half calibrates, second half evaluates "
        "(default: standard-library docstrings, disjoint halves)",
    )
    parser.add_argument(
        "--eval-tokens",
        type=_positive_int,
        default=1024,
        help="tokens scored for perplexity (default 1024)",
    )
    parser.add_argument(
        "--seq-len", type=_positive_int, default=256, help="tokens per window (default 256)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def register(subparsers: Any) -> None:
    """Add the ``quantize`` subcommand."""
    p = subparsers.add_parser(
        "quantize",
        help="quantize a causal LM and report perplexity, memory and time",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(p)
    p.add_argument(
        "--format", choices=sorted(FORMATS), default="fp8", help="quantization format (default fp8)"
    )
    p.add_argument(
        "--calib-size",
        type=_positive_int,
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


def load_texts(path: Path | None) -> tuple[str, str]:
    """``(calibration text, evaluation text)``: disjoint halves of a file or of the stdlib."""
    if path is None:
        from modeloptim.utils.text_corpus import stdlib_docstring_corpus

        return stdlib_docstring_corpus("calib"), stdlib_docstring_corpus("eval")
    from modeloptim.utils.text_corpus import read_text

    text = read_text(path)
    half = len(text) // 2
    return text[:half], text[half:]


def windows(tokenizer: Any, text: str, seq_len: int, count: int, what: str) -> Any:
    """Token windows ``[count, seq_len]`` with a one-line error when the text is too short."""
    from modeloptim.torch.utils.perplexity import token_windows

    try:
        return token_windows(tokenizer, text, seq_len, count)
    except ValueError as err:
        raise CliError(f"{what}: {err}") from None


def weight_memory(model: Any) -> dict[str, float]:
    """Storage of all parameters, each shared tensor once.

    Quantized weights count at their format's bits per element (scales included).

    Returns:
        ``{"megabytes": ..., "effective_bits": ...}``.
    """
    from modeloptim.torch.quantization.nn import SequentialQuantizer
    from modeloptim.torch.quantization.nn.modules.quant_module import QuantModule

    bits_of: dict[int, float] = {}
    for layer in model.modules():
        if isinstance(layer, QuantModule):
            for quantizer, weight in layer.weight_quantizer_pairs():
                # W4A8-style chains store the first quantizer's codes (the rest are scales).
                first = quantizer[0] if isinstance(quantizer, SequentialQuantizer) else quantizer
                if quantizer.is_enabled:
                    bits_of[id(weight)] = float(first.format.bits_per_element)  # type: ignore[union-attr,arg-type]
    total_bits, numel = 0.0, 0
    for p in {id(p): p for p in model.parameters()}.values():
        total_bits += p.numel() * bits_of.get(id(p), p.element_size() * 8)
        numel += p.numel()
    return {"megabytes": total_bits / 8 / 2**20, "effective_bits": total_bits / max(numel, 1)}


def _check_args(args: argparse.Namespace) -> Any:
    """Validate everything cheap before the model loads; returns the parsed config."""
    import modeloptim.torch.quantization as mtq

    if args.text is not None and not args.text.is_file():
        raise CliError(f"--text: file {str(args.text)!r} does not exist")
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


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from modeloptim.torch.utils.default_model import load_model

    return load_model(args.model)


def run_quantize(args: argparse.Namespace) -> int:
    """Run ``modeloptim quantize``; prints the report, returns the exit code."""
    import modeloptim.torch.quantization as mtq
    from modeloptim.torch.utils.perplexity import perplexity

    config = _check_args(args)
    timer = StageTimer()
    with timer.stage("load"):
        model, tokenizer = _load(args)
        calib_text, eval_text = load_texts(args.text)
        calib = windows(tokenizer, calib_text, args.seq_len, args.calib_size, "calibration text")
        n_eval = max(1, args.eval_tokens // args.seq_len)
        evalw = windows(tokenizer, eval_text, args.seq_len, n_eval, "evaluation text")
    memory_before = weight_memory(model)
    with timer.stage("eval_before"):
        ppl_before = perplexity(model, evalw, progress=True)

    def forward_loop(m: Any) -> None:
        for row in calib:
            m(input_ids=row[None])

    with timer.stage("quantize"):
        mtq.quantize(model, config, forward_loop)
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
        "model": args.model or "smollm2 (built-in SmolLM2-135M-Instruct)",
        "format": args.format,
        "preset": FORMATS[args.format],
        "algorithm": config.algorithm.method,
        "layers_quantized": len(layers),
        "calib_tokens": int(calib.numel()),
        "eval_tokens": int(evalw.numel()),
        "perplexity_before": ppl_before,
        "perplexity_after": ppl_after,
        "weight_mb_before": memory_before["megabytes"],
        "weight_mb_after": weight_memory(model)["megabytes"],
        "effective_bits_before": memory_before["effective_bits"],
        "effective_bits_after": weight_memory(model)["effective_bits"],
        "seconds": {**timer.seconds, "total": round(sum(timer.seconds.values()), 3)},
        "output": None if args.output is None else str(args.output),
    }
    print_report(report, args.json)
    return 0


def print_report(report: dict[str, Any], as_json: bool) -> None:
    """Print the report as JSON or as a table."""
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"modeloptim quantize: {report['model']} -> {report['format']}")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row(
        "perplexity", f"{report['perplexity_before']:.3f}", f"{report['perplexity_after']:.3f}"
    )
    table.add_row(
        "weight memory (MB)",
        f"{report['weight_mb_before']:.1f}",
        f"{report['weight_mb_after']:.1f}",
    )
    table.add_row(
        "effective bits/weight",
        f"{report['effective_bits_before']:.2f}",
        f"{report['effective_bits_after']:.2f}",
    )
    console = Console()
    console.print(table)
    console.print(
        f"preset {report['preset']} (algorithm {report['algorithm']}), "
        f"{report['layers_quantized']} layers quantized, calibration {report['calib_tokens']} "
        f"tokens, evaluation {report['eval_tokens']} tokens"
    )
    console.print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()))
    if report.get("output"):
        console.print(f"saved to {report['output']}")
