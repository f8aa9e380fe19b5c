"""Perplexity and calibration cost of the calibration algorithms on SmolLM2-135M (CPU).

Calibration text: the "calib" half of the stdlib docstring corpus; evaluation text: the
disjoint "eval" half. For each row the model is reloaded, quantized with the preset (and the
algorithm named), and evaluated; the table prints the perplexity, its ratio to the
unquantized baseline measured in the same run, and the calibration time relative to one
plain forward pass over the calibration data (also measured in this run).

    python benchmarks/calib_algorithms.py            # full table
    python benchmarks/calib_algorithms.py --rows int4 --calib-windows 8 --eval-windows 8
    python benchmarks/calib_algorithms.py --rows int4,nvfp4 --only gptq --auto-bits ''

``gptq`` rows are sequential GPTQ (the default); ``gptq one-pass`` rows take every Hessian
from one full-precision pass (``sequential=False``).

Figures of the first 2026-11-24 table were measured on 16 CPU cores (the H100 machine's host
CPU, CUDA hidden) with ``--calib-windows 16 --eval-windows 24 --seq-len 256 --batch-size 8
--threads 16`` and windows pre-tokenized from the dev machine's stdlib corpus (``--windows``).
The second table (sequential GPTQ) was measured on the 2-core dev machine, shared with other
jobs (load average 7-12), with ``OMP_NUM_THREADS=1 nice -n 10`` and ``--calib-windows 8
--eval-windows 16 --seq-len 256 --batch-size 8 --threads 1``, in three processes at once
(``--rows int4,w8a8,kv --auto-bits ''``, ``--rows nvfp4 --auto-bits ''`` and
``--rows '' --auto-bits 4.5,6,8``); every ratio divides by the forward time measured in the
same process.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from typing import Any

import torch

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.config.presets import PRESETS
from modeloptim.torch.utils.default_model import load_default_model
from modeloptim.torch.utils.perplexity import perplexity, token_windows
from modeloptim.utils.text_corpus import stdlib_docstring_corpus


def _with_algo(preset: str, algorithm: Any, block: int | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(PRESETS[preset])
    cfg["algorithm"] = algorithm
    if block is not None:
        for e in cfg["quant_cfg"]:
            if e.get("quantizer_name") == "*weight_quantizer" and "cfg" in e:
                cfgs = e["cfg"] if isinstance(e["cfg"], list) else [e["cfg"]]
                for c in cfgs:
                    if c.get("block_sizes"):
                        c["block_sizes"] = {**c["block_sizes"], -1: block}
    return cfg


def _kv(base: str, kv: str) -> dict[str, Any]:
    """Base preset plus the KV-cache preset's k/v entries (as ModelOpt users merge them)."""
    cfg = copy.deepcopy(PRESETS[base])
    kv_entries = [e for e in PRESETS[kv]["quant_cfg"] if e.get("quantizer_name") != "default"]
    cfg["quant_cfg"] = [*cfg["quant_cfg"], *copy.deepcopy(kv_entries)]
    return cfg


ROWS: dict[str, list[tuple[str, Callable[[], dict[str, Any]]]]] = {
    "int4": [
        ("INT4 b128 RTN (max)", lambda: _with_algo("INT4_AWQ_CFG", "max")),
        ("INT4 b128 awq_lite", lambda: _with_algo("INT4_AWQ_CFG", {"method": "awq_lite"})),
        ("INT4 b128 awq_full", lambda: _with_algo("INT4_AWQ_CFG", {"method": "awq_full"})),
        ("INT4 b128 gptq", lambda: _with_algo("INT4_AWQ_CFG", {"method": "gptq"})),
        (
            "INT4 b128 gptq one-pass",
            lambda: _with_algo("INT4_AWQ_CFG", {"method": "gptq", "sequential": False}),
        ),
    ],
    "int4b64": [
        ("INT4 b64 RTN (max)", lambda: _with_algo("INT4_AWQ_CFG", "max", 64)),
        ("INT4 b64 awq_lite", lambda: _with_algo("INT4_AWQ_CFG", {"method": "awq_lite"}, 64)),
        ("INT4 b64 awq_full", lambda: _with_algo("INT4_AWQ_CFG", {"method": "awq_full"}, 64)),
        ("INT4 b64 gptq", lambda: _with_algo("INT4_AWQ_CFG", {"method": "gptq"}, 64)),
    ],
    "nvfp4": [
        ("NVFP4 W4A4 RTN (max)", lambda: _with_algo("NVFP4_DEFAULT_CFG", "max")),
        ("NVFP4 W4A4 awq_lite", lambda: _with_algo("NVFP4_DEFAULT_CFG", {"method": "awq_lite"})),
        ("NVFP4 W4A4 awq_full", lambda: _with_algo("NVFP4_DEFAULT_CFG", {"method": "awq_full"})),
        ("NVFP4 W4A4 gptq", lambda: _with_algo("NVFP4_DEFAULT_CFG", {"method": "gptq"})),
        (
            "NVFP4 W4A4 gptq one-pass",
            lambda: _with_algo("NVFP4_DEFAULT_CFG", {"method": "gptq", "sequential": False}),
        ),
    ],
    "ablations": [
        (
            "INT4 b128 gptq no act_order",
            lambda: _with_algo("INT4_AWQ_CFG", {"method": "gptq", "act_order": False}),
        ),
        (
            "NVFP4 W4A4 gptq no act_order",
            lambda: _with_algo("NVFP4_DEFAULT_CFG", {"method": "gptq", "act_order": False}),
        ),
        (
            "INT8 W8A8 smoothquant alpha=0.5",
            lambda: _with_algo(
                "INT8_SMOOTHQUANT_CFG", {"method": "smoothquant", "search_alpha": False}
            ),
        ),
    ],
    "w8a8": [
        ("INT8 W8A8 plain (max)", lambda: _with_algo("INT8_DEFAULT_CFG", "max")),
        ("INT8 W8A8 smoothquant", lambda: _with_algo("INT8_SMOOTHQUANT_CFG", "smoothquant")),
    ],
    "kv": [
        ("FP8 W8A8", lambda: _with_algo("FP8_DEFAULT_CFG", "max")),
        ("FP8 W8A8 + FP8 KV", lambda: _kv("FP8_DEFAULT_CFG", "FP8_KV_CFG")),
        ("FP8 W8A8 + NVFP4 KV", lambda: _kv("FP8_DEFAULT_CFG", "NVFP4_KV_CFG")),
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"groups of rows: {list(ROWS)}")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--calib-windows", type=int, default=32)
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--auto-bits", default="4.5,6,8", help="auto_quantize budgets ('' = skip)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--windows", help="torch file {'calib': [n,T], 'eval': [n,T]} of token ids")
    ap.add_argument("--only", default="", help="keep rows whose label contains one of these")
    ap.add_argument("--skip", default="", help="drop rows whose label contains one of these")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base, tok = load_default_model()
    if args.windows:  # pre-tokenized (same text on machines with another Python stdlib)
        w = torch.load(args.windows)
        calib = w["calib"][: args.calib_windows, : args.seq_len]
        evalw = w["eval"][: args.eval_windows, : args.seq_len]
    else:
        calib = token_windows(
            tok, stdlib_docstring_corpus("calib"), args.seq_len, args.calib_windows
        )
        evalw = token_windows(tok, stdlib_docstring_corpus("eval"), args.seq_len, args.eval_windows)
    batches = list(calib.split(args.batch_size))

    def loop(model: torch.nn.Module) -> None:
        for b in batches:
            model(input_ids=b)

    t0 = time.perf_counter()
    with torch.no_grad():
        loop(base)
    fwd_s = time.perf_counter() - t0
    ppl_fp = perplexity(base, evalw, batch_size=args.batch_size)
    results: list[dict[str, Any]] = [
        {"row": "fp32 baseline", "ppl": ppl_fp, "ratio": 1.0, "calib_s": 0.0, "calib_x": 0.0}
    ]
    print(f"one forward over calibration data: {fwd_s:.2f} s; fp32 perplexity {ppl_fp:.3f}")

    only = [w for w in args.only.split(",") if w]
    skip = [w for w in args.skip.split(",") if w]
    for group in [g for g in args.rows.split(",") if g]:
        for label, make in ROWS[group]:
            if (only and not any(w in label for w in only)) or any(w in label for w in skip):
                continue
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            mtq.quantize(model, make(), loop)
            dt = time.perf_counter() - t0
            ppl = perplexity(model, evalw, batch_size=args.batch_size)
            results.append(
                {
                    "row": label,
                    "ppl": ppl,
                    "ratio": ppl / ppl_fp,
                    "calib_s": dt,
                    "calib_x": dt / fwd_s,
                }
            )
            print(
                f"{label:28s} ppl {ppl:8.3f}  x{ppl / ppl_fp:.3f}  calib {dt:7.1f} s "
                f"({dt / fwd_s:5.1f}x fwd)",
                flush=True,
            )
            del model

    for bits in [float(b) for b in args.auto_bits.split(",") if b]:
        from modeloptim.torch.quantization.auto_quantize import auto_quantize

        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        model, state = auto_quantize(
            model,
            constraints={"effective_bits": bits},
            quantization_formats=[PRESETS["NVFP4_DEFAULT_CFG"], PRESETS["FP8_DEFAULT_CFG"]],
            data_loader=batches,
            forward_step=lambda m, b: m(input_ids=b),
            loss_func=lambda out, b: (
                out.loss if getattr(out, "loss", None) is not None else _lm_loss(out.logits, b)
            ),
            num_calib_steps=len(batches),
            num_score_steps=min(8, len(batches)),
        )
        dt = time.perf_counter() - t0
        ppl = perplexity(model, evalw, batch_size=args.batch_size)
        label = f"auto_quantize {bits:g} bits (got {state['effective_bits']:.2f})"
        results.append(
            {"row": label, "ppl": ppl, "ratio": ppl / ppl_fp, "calib_s": dt, "calib_x": dt / fwd_s}
        )
        print(f"{label:28s} ppl {ppl:8.3f}  x{ppl / ppl_fp:.3f}  search {dt:7.1f} s", flush=True)
        del model

    print()
    print(f"| {'configuration':40s} | perplexity | vs fp32 | calib time / fwd |")
    print(f"|{'-' * 42}|-----------:|--------:|----------------:|")
    for r in results:
        print(f"| {r['row']:40s} | {r['ppl']:10.3f} | {r['ratio']:7.3f} | {r['calib_x']:15.1f} |")
    if args.json:
        print(json.dumps({"forward_s": fwd_s, "rows": results}, indent=1))


def _lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1)
    )


if __name__ == "__main__":
    main()
