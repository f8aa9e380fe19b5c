"""Post-training quantization of an LLM: calibrate, measure perplexity, export, reload.

Runs offline on CPU with the built-in SmolLM2-135M (or ``--model DIR``, any HF causal LM
folder). Calibration text and evaluation text are disjoint halves of the standard library's
docstrings. Steps:

1. perplexity of the float model;
2. ``mtq.quantize`` with the chosen preset (calibration runs the forward loop);
3. perplexity of the fake-quantized model;
4. ``export_hf_checkpoint`` (ModelOpt layout: packed weights + ``hf_quant_config.json``),
   ``load_hf_checkpoint`` and a check that the reloaded model gives the same logits.

Example::

    python examples/llm_ptq.py --preset INT4_AWQ_CFG --export-dir /tmp/smollm2-int4
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch

import modeloptim.torch.quantization as mtq
from modeloptim.torch.export import export_hf_checkpoint
from modeloptim.torch.export.loader import load_hf_checkpoint
from modeloptim.torch.utils.default_model import load_model
from modeloptim.torch.utils.perplexity import perplexity, token_windows
from modeloptim.utils.text_corpus import CorpusSplit, stdlib_docstring_corpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: a run of a few minutes on two CPU cores)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="'default' (SmolLM2-135M) or a HF folder")
    ap.add_argument(
        "--preset",
        default="FP8_DEFAULT_CFG",
        choices=sorted(mtq.PRESETS),
        help="quantization preset (ModelOpt name)",
    )
    ap.add_argument("--seq-len", type=int, default=256, help="tokens per window")
    ap.add_argument("--calib-windows", type=int, default=16, help="calibration windows")
    ap.add_argument("--eval-windows", type=int, default=16, help="evaluation windows")
    ap.add_argument("--export-dir", default=None, help="where to export (default: a temp dir)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the example; returns the figures it printed (perplexities, max logit difference)."""
    args = parse_args(argv)
    torch.manual_seed(0)
    model, tok = load_model(args.model)
    calib = token_windows(
        tok, stdlib_docstring_corpus(CorpusSplit.CALIB), args.seq_len, args.calib_windows
    )
    evals = token_windows(
        tok, stdlib_docstring_corpus(CorpusSplit.EVAL), args.seq_len, args.eval_windows
    )
    ppl_fp = perplexity(model, evals, batch_size=4)

    def forward_loop(m: torch.nn.Module) -> None:
        with torch.no_grad():
            for i in range(0, len(calib), 4):
                m(input_ids=calib[i : i + 4])

    start = time.perf_counter()
    model = mtq.quantize(model, copy.deepcopy(mtq.PRESETS[args.preset]), forward_loop)
    seconds = time.perf_counter() - start
    mtq.print_quant_summary(model)
    ppl_q = perplexity(model, evals, batch_size=4)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.export_dir or f"{tmp}/export"
        export_hf_checkpoint(model, out)
        reloaded = load_hf_checkpoint(out)
        with torch.no_grad():
            a = model(input_ids=evals[:2]).logits
            b = reloaded(input_ids=evals[:2]).logits
        diff = (a - b).abs().max().item()

    print(f"\n{'':24}{'perplexity':>12}")
    print(f"{'float':24}{ppl_fp:12.3f}")
    print(f"{args.preset:24}{ppl_q:12.3f}")
    print(f"quantize + calibrate: {seconds:.1f} s; export -> reload max |logit diff| {diff:.3g}")
    return {"ppl_float": ppl_fp, "ppl_quant": ppl_q, "reload_max_diff": diff}


if __name__ == "__main__":
    main()
