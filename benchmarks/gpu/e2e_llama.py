"""End to end on the GPU: a LLaMA-shaped ~0.84B model, quantize + calibrate, fake-quant forward.

The model is built from a ``transformers.LlamaConfig`` with random weights in bf16 (nothing is
downloaded). For each preset (FP8_DEFAULT_CFG, NVFP4_DEFAULT_CFG, INT4_AWQ_CFG) on a fresh copy:

* ``mtq.quantize`` with a forward loop over the calibration tokens (default 64 x 512 = 32k
  random token ids from a fixed seed, batches of 8), timed cold (the first call also builds the
  Triton kernels), then a warm ``mtq.calibrate(model, "max", ...)`` over the same data;
* the fake-quant forward (eval, no grad, weights cached by ``cache_quantized_weights``) on one
  8 x 512 batch, median of repeated CUDA-event timings.

Baselines measured in the same run on the unquantized bf16 model: one plain forward pass over
the calibration data, and the forward of the same 8 x 512 batch; the "paired" columns time
baseline and candidate in alternation (the ratio of each round, median), which cancels the
host-speed drift of the lent machine. Targets (issue #8): max
calibration <= 3x the plain pass, fake-quant forward <= 1.5x bf16. AWQ's search is reported
separately (it is not a max calibration). ``--profile`` prints the top CUDA/CPU ops of one
fake-quant forward per preset (torch.profiler).

    python benchmarks/gpu/e2e_llama.py [--json F] [--profile] [--tiny]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.nn.modules.quant_module import cache_quantized_weights

PRESETS = ("FP8_DEFAULT_CFG", "NVFP4_DEFAULT_CFG", "INT4_AWQ_CFG")


def build_model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """Random-weight LLaMA from a config, bf16, on ``device`` (built there directly)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.ffn,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.seq),
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:
            torch.manual_seed(0)
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds for one call of ``fn`` (device synchronized before and after)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def median_ms(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            times.append(wall(fn, device) * 1e3)
    return statistics.median(times)


def paired(
    fns: dict[str, Callable[[], Any]], device: torch.device, reps: int, timer: str = "event"
) -> dict[str, list[float]]:
    """Times of several functions measured interleaved: one call of each per round.

    The lent machine's host speed drifts (up to ~2x within one call), and a host-bound
    forward follows it; measuring the baseline and the candidate in alternation exposes both
    to the same phases, so their per-round ratio is what the code costs, not when it ran.
    ``timer``: ``"event"`` (CUDA events, ms) or ``"wall"`` (synchronized wall clock, s).
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if timer == "wall" or device.type != "cuda":
                t = wall(fn, device)
                times[name].append(t if timer == "wall" else t * 1e3)
                continue
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end))
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios ``num[i] / den[i]``."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def host_ms(fn: Callable[[], Any], device: torch.device, reps: int = 10) -> float:
    """Median host (enqueue) milliseconds of ``fn``: device idle before, no sync inside.

    When this is below the device time the forward is GPU bound; the launch queue can make
    it block (then it reads close to the device time).
    """
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    _sync(device)
    return statistics.median(times)


class GcTimer:
    """Total time and count of Python garbage collections while active (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self.count = [0, 0, 0]
        self._t0 = 0.0

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.total_s += time.perf_counter() - self._t0
            self.count[info["generation"]] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)


def make_loop(batches: list[torch.Tensor]) -> Callable[[torch.nn.Module], None]:
    """Forward loop over the calibration batches (no grad, no KV cache)."""

    def loop(model: torch.nn.Module) -> None:
        with torch.no_grad():
            for ids in batches:
                model(input_ids=ids, use_cache=False)

    return loop


def profile_forward(model: torch.nn.Module, ids: torch.Tensor, rows: int = 14) -> str:
    """Top ops of one forward by device and by CPU time (torch.profiler tables)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    if ids.is_cuda:
        acts.append(ProfilerActivity.CUDA)
    with torch.no_grad(), profile(activities=acts) as prof:
        model(input_ids=ids, use_cache=False)
        _sync(ids.device)
    avg = prof.key_averages()
    key = "cuda_time_total" if ids.is_cuda else "cpu_time_total"
    return (
        avg.table(sort_by=key, row_limit=rows)
        + "\n"
        + avg.table(sort_by="self_cpu_time_total", row_limit=rows)
    )


def python_profile(fn: Callable[[], Any], device: torch.device, calls: int = 5) -> str:
    """Where the host time of ``fn`` goes (cProfile, by own time and by cumulative time)."""
    import cProfile
    import io
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(calls):
        fn()
    _sync(device)
    pr.disable()
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    st.sort_stats("tottime").print_stats(25)
    st.sort_stats("cumulative").print_stats(40)
    return buf.getvalue()


def run_preset(
    name: str,
    base: torch.nn.Module,
    loop: Callable[[torch.nn.Module], None],
    ids: torch.Tensor,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Quantize a copy of ``base`` with preset ``name``; time calibration and forward."""
    model = copy.deepcopy(base)
    cfg = getattr(mtq, name)
    t_quant = wall(lambda: mtq.quantize(model, cfg, loop), device)
    t_max = wall(lambda: mtq.calibrate(model, "max", loop), device)
    # max calibration vs the plain pass, interleaved (see `paired`): 3 rounds
    calib = paired(
        {"plain": lambda: loop(base), "calib": lambda: mtq.calibrate(model, "max", loop)},
        device,
        3,
        timer="wall",
    )
    model.eval()
    with torch.no_grad(), cache_quantized_weights(model):
        first = wall(lambda: model(input_ids=ids, use_cache=False), device)
        with GcTimer() as gct:
            fwd = median_ms(lambda: model(input_ids=ids, use_cache=False), device, args.reps)
        pair = paired(
            {
                "bf16": lambda: base(input_ids=ids, use_cache=False),
                "fq": lambda: model(input_ids=ids, use_cache=False),
            },
            device,
            args.reps,
        )
        host = host_ms(lambda: model(input_ids=ids, use_cache=False), device)
        prof = profile_forward(model, ids) if args.profile else ""
        if args.cprofile:
            prof += python_profile(lambda: model(input_ids=ids, use_cache=False), device)
    with torch.no_grad():
        nocache = median_ms(lambda: model(input_ids=ids, use_cache=False), device, 3, warmup=1)
    return {
        "preset": name,
        "quantize_s": t_quant,
        "max_calib_s": t_max,
        "first_forward_s": first,
        "forward_ms": fwd,
        "forward_nocache_ms": nocache,
        "forward_host_ms": host,
        "paired_forward_ratio": median_ratio(pair["fq"], pair["bf16"]),
        "paired_bf16_ms": statistics.median(pair["bf16"]),
        "paired_calib_ratio": median_ratio(calib["calib"], calib["plain"]),
        "gc_ms_per_forward": gct.total_s * 1e3 / (args.reps + 3),
        "gc_collections": gct.count,
        "profile": prof,
    }


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--ffn", type=int, default=5632)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--calib-seqs", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--profile", action="store_true")
    p.add_argument("--cprofile", action="store_true", help="host-side Python profile")
    p.add_argument("--tiny", action="store_true", help="small model for a CPU smoke run")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.tiny:
        args.hidden, args.ffn, args.layers, args.heads, args.kv_heads = 256, 512, 2, 4, 2
        args.vocab, args.seq, args.calib_seqs, args.batch, args.reps = 512, 64, 4, 2, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    import transformers
    import triton

    env = f"torch {torch.__version__}, triton {triton.__version__}, "
    env += f"transformers {transformers.__version__}"
    if device.type == "cuda":
        env = f"{torch.cuda.get_device_name(device)}, " + env
    print(f"device: {env}")

    t_build = time.perf_counter()
    base = build_model(args, device)
    params = sum(t.numel() for t in base.parameters())
    print(
        f"model: LLaMA hidden {args.hidden}, {args.layers} layers, ffn {args.ffn}, heads "
        f"{args.heads}/{args.kv_heads} kv, vocab {args.vocab}: {params / 1e9:.3f} B params, "
        f"bf16, built in {time.perf_counter() - t_build:.1f} s"
    )
    gen = torch.Generator().manual_seed(1234)
    calib = torch.randint(0, args.vocab, (args.calib_seqs, args.seq), generator=gen).to(device)
    batches = list(calib.split(args.batch))
    loop = make_loop(batches)
    ids = batches[0]
    print(f"calibration: {calib.numel()} tokens in {len(batches)} batches of {tuple(ids.shape)}")

    wall(lambda: loop(base), device)  # warm-up (cuBLAS handles, SDPA selection)
    t_plain = statistics.median(wall(lambda: loop(base), device) for _ in range(3))
    with torch.no_grad():
        bf16_ms = median_ms(lambda: base(input_ids=ids, use_cache=False), device, args.reps)
        bf16_host = host_ms(lambda: base(input_ids=ids, use_cache=False), device)
    print(
        f"bf16: plain pass over the calibration data {t_plain:.3f} s; forward {bf16_ms:.2f} ms "
        f"(host enqueue {bf16_host:.2f} ms)"
    )
    if args.cprofile:
        with torch.no_grad():
            print(
                "bf16 forward, cProfile:\n"
                + python_profile(lambda: base(input_ids=ids, use_cache=False), device)
            )

    results = []
    for name in args.presets.split(","):
        r = run_preset(name, base, loop, ids, args, device)
        results.append(r)
        gc.collect()  # free the quantized copy before the next preset
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(
            f"{name}: quantize {r['quantize_s']:.2f} s, max calib {r['max_calib_s']:.2f} s, "
            f"forward {r['forward_ms']:.2f} ms (no cache {r['forward_nocache_ms']:.2f} ms, "
            f"host enqueue {r['forward_host_ms']:.2f} ms, gc {r['gc_ms_per_forward']:.2f} "
            f"ms/forward, collections {r['gc_collections']})",
            flush=True,
        )
        if r["profile"]:
            print(r["profile"])

    rows = []
    for r in results:
        awq = r["preset"].startswith("INT4_AWQ")
        rows.append(
            [
                r["preset"],
                f"{r['quantize_s']:.2f}",
                f"{r['quantize_s'] / t_plain:.2f}" + (" (AWQ search)" if awq else ""),
                f"{r['max_calib_s']:.2f}",
                f"{r['max_calib_s'] / t_plain:.2f}",
                f"{r['forward_ms']:.2f}",
                f"{r['forward_ms'] / bf16_ms:.2f}",
                f"{r['forward_nocache_ms'] / bf16_ms:.2f}",
                f"{r['paired_forward_ratio']:.2f}",
                f"{r['paired_calib_ratio']:.2f}",
                f"{r['first_forward_s']:.2f}",
            ]
        )
    headers = [
        "preset",
        "quantize s (cold)",
        "x plain pass",
        "max calib s (warm)",
        "x plain pass",
        "fq fwd ms",
        "x bf16",
        "x bf16 no cache",
        "fwd x bf16 (paired)",
        "calib x plain (paired)",
        "1st fwd s",
    ]
    print(
        f"\nbaseline: plain bf16 pass {t_plain:.3f} s ({len(batches)} batches), "
        f"bf16 forward {tuple(ids.shape)} {bf16_ms:.2f} ms; targets: calib <= 3x, fwd <= 1.5x"
    )
    print(_table(headers, rows))
    print(
        "paired: the quantized and the bf16 model (or the calibration and the plain pass) "
        "timed in alternation, median of the per-round ratios"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "env": env,
                    "params": params,
                    "plain_pass_s": t_plain,
                    "bf16_forward_ms": bf16_ms,
                    "bf16_host_ms": bf16_host,
                    "results": [{k: v for k, v in r.items() if k != "profile"} for r in results],
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
