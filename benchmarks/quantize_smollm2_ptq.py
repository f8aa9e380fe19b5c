"""SmolLM2-135M (fp32, CPU) perplexity after PTQ with each preset vs the float baseline.

Calibration: one half of the stdlib docstrings; evaluation: the other half (disjoint modules).
The model loads once; after each preset every quantized layer is exported back to float.

    python benchmarks/quantize_smollm2_ptq.py [--seq-len 256] [--calib 4] [--eval 4]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.nn import QuantModule
from modeloptim.torch.utils.default_model import load_default_model
from modeloptim.torch.utils.perplexity import perplexity, token_windows
from modeloptim.utils.text_corpus import stdlib_docstring_corpus

PRESETS = {
    "FP8 (per-tensor W+A)": "FP8_DEFAULT_CFG",
    "INT8 weight-only": "INT8_WEIGHT_ONLY_CFG",
    "INT8 W8A8": "INT8_DEFAULT_CFG",
    "NVFP4 (W+A)": "NVFP4_DEFAULT_CFG",
    "INT4 block-128 RTN": "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    "MXFP8 (W+A)": "MXFP8_DEFAULT_CFG",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--calib", type=int, default=4, help="calibration windows")
    ap.add_argument("--eval", type=int, default=4, help="evaluation windows")
    args = ap.parse_args()
    model, tok = load_default_model(torch.float32)
    calib = token_windows(tok, stdlib_docstring_corpus("calib"), args.seq_len, args.calib)
    evalw = token_windows(tok, stdlib_docstring_corpus("eval"), args.seq_len, args.eval)
    start = time.perf_counter()
    base = perplexity(model, evalw)
    rows = [("fp32 baseline", base, 1.0, time.perf_counter() - start)]
    print(f"{'config':24s} {'ppl':>9s} {'ratio':>7s} {'sec':>7s}", flush=True)
    print(f"{'fp32 baseline':24s} {base:9.3f} {1.0:7.4f} {rows[0][3]:7.1f}", flush=True)
    for label, preset in PRESETS.items():
        start = time.perf_counter()
        mtq.quantize(model, preset, lambda m: [m(input_ids=r[None]) for r in calib])
        with mtq.cache_quantized_weights(model):
            ppl = perplexity(model, evalw)
        for layer in list(model.modules()):
            if isinstance(layer, QuantModule):
                layer.export()
        sec = time.perf_counter() - start
        rows.append((label, ppl, ppl / base, sec))
        print(f"{label:24s} {ppl:9.3f} {ppl / base:7.4f} {sec:7.1f}", flush=True)
    meta = {"seq_len": args.seq_len, "calib_tokens": calib.numel(), "eval_tokens": evalw.numel()}
    print(json.dumps({"setup": meta, "rows": rows}))


if __name__ == "__main__":
    main()
