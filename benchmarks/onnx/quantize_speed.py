"""End-to-end speed of ``modeloptim.onnx.quantization.quantize`` on CPU, before vs after.

"Before" is the package as of ``--baseline-ref`` (default: the last commit before the
onnxspeed changes), extracted with ``git archive``; "after" is this checkout. Every
quantization runs in a fresh Python process with one tree or the other on ``PYTHONPATH``,
on the same saved calibration inputs, before and after alternating; the table shows the
wall time of the ``quantize`` call, the ratio, and whether both wrote byte-identical models.
Also times the KL (entropy) threshold search alone: the batched search against the plain
per-candidate loop (kept as ``_kl_threshold_bins_loop``), on histograms of real activations.

Usage: python benchmarks/onnx/quantize_speed.py [--baseline-ref REF] [--ocr-lines 32]
    [--magika-files 64] [--repeat 1] [--skip-ocr] [--ocr-det] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from onnx_common import print_table  # noqa: E402

BASELINE_REF = "c3b61b3"  # main before the onnxspeed branch
# The recipe's nodes kept float (modeloptim.onnx.evaluation.ocr.OCR_SKIP_SENSITIVE).
OCR_SKIP_SENSITIVE = {"det": 6, "rec": 8}
FLOAT = 1  # onnx.TensorProto.FLOAT
MAX_KL_HISTOGRAMS = 48  # the loop costs ~0.1 s per histogram and level count

# name -> (model key, quantize keyword arguments)
WORKLOADS: dict[str, tuple[str, dict]] = {
    "magika int8 entropy": (
        "magika",
        {"quantize_mode": "int8", "calibration_method": "entropy", "calibration_batch_size": 16},
    ),
    "magika int8 max": (
        "magika",
        {"quantize_mode": "int8", "calibration_method": "max", "calibration_batch_size": 16},
    ),
    "magika fp8 max": (
        "magika",
        {"quantize_mode": "fp8", "calibration_method": "max", "calibration_batch_size": 16},
    ),
    **{
        f"ocr {key} int8 recipe (max, sensitivity, bias corr.)": (
            key,
            {
                "quantize_mode": "int8",
                "calibration_method": "max",
                "activation_type": "uint8",
                "skip_sensitive_nodes": OCR_SKIP_SENSITIVE[key],
                "sensitivity_metric": "output",
                "sensitivity_samples": 4,
                "bias_correction": True,
            },
        )
        for key in ("rec", "det")
    },
    "ocr rec int8 entropy": (
        "rec",
        {"quantize_mode": "int8", "calibration_method": "entropy", "activation_type": "uint8"},
    ),
}


def worker(spec_path: str) -> None:
    """Child process: one quantize call with the tree on PYTHONPATH; prints JSON."""
    spec = json.loads(Path(spec_path).read_text())
    import logging

    logging.disable(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from modeloptim.onnx.quantization import quantize

    with open(spec["data"], "rb") as f:
        data = pickle.load(f)
    start = time.perf_counter()
    quantize(spec["model"], calibration_data=data, output_path=spec["output"], **spec["kwargs"])
    seconds = time.perf_counter() - start
    digest = hashlib.sha256(Path(spec["output"]).read_bytes()).hexdigest()
    print(json.dumps({"seconds": seconds, "sha256": digest}))


def run_one(tree: Path, spec: dict, tmp: Path) -> dict:
    spec_path = tmp / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(tree), TQDM_DISABLE="1")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"worker failed ({tree}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def extract_tree(ref: str, dest: Path) -> str:
    """``git archive`` the package at ``ref`` into ``dest``; returns the full commit hash."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "modeloptim"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit


def prepare_inputs(args: argparse.Namespace, tmp: Path) -> dict[str, tuple[str, str]]:
    """Model path and pickled calibration data per model key."""
    inputs: dict[str, tuple[str, str]] = {}
    from modeloptim.onnx.evaluation.magika_eval import (
        file_features,
        magika_model_path,
        sample_files,
    )

    feats = file_features(sample_files(args.magika_files, seed=1))
    (tmp / "magika.pkl").write_bytes(pickle.dumps(feats))
    inputs["magika"] = (str(magika_model_path()), str(tmp / "magika.pkl"))
    if not args.skip_ocr:
        from modeloptim.onnx.evaluation.ocr import (
            OcrPipeline,
            rapidocr_model_paths,
            render_line,
            text_lines,
        )

        lines = text_lines()
        order = np.random.default_rng(0).permutation(len(lines))
        pipe = OcrPipeline()
        pipe.recording = True
        for k, i in enumerate(order[: args.ocr_lines]):
            pipe.read(render_line(lines[i], k))
        keys = ("rec", "det") if args.ocr_det else ("rec",)
        for key in keys:
            recorded = pipe.rec_inputs if key == "rec" else pipe.det_inputs
            (tmp / f"{key}.pkl").write_bytes(pickle.dumps(list(recorded)))
            inputs[key] = (str(rapidocr_model_paths()[key]), str(tmp / f"{key}.pkl"))
    return inputs


def kl_search_rows(data_path: str, model_path: str, label: str) -> list[list[object]]:
    """Batched vs loop KL search on the entropy histograms of one model's activations."""
    import onnx

    from modeloptim.onnx.calib_data import make_feeds
    from modeloptim.onnx.ort_utils import float_tensor_names
    from modeloptim.onnx.quantization.kl_search import (
        _kl_threshold_bins_loop,
        kl_threshold_bins,
    )
    from modeloptim.onnx.quantization.quantize import run_calibration

    with open(data_path, "rb") as f:
        data = pickle.load(f)
    model = onnx.shape_inference.infer_shapes(onnx.load(model_path))
    types = float_tensor_names(model)
    names = [o for n in model.graph.node for o in n.output if types.get(o) == FLOAT]
    feeds = make_feeds(data, model, batch_size=16)[:4]
    calib = run_calibration(model, names, feeds, "entropy")
    hists = [h.astype(np.float64) for h in calib.hists.values()][:MAX_KL_HISTOGRAMS]
    rows = []
    for levels in (128, 256):
        times = {}
        bins = {}
        for name, fn in (("loop", _kl_threshold_bins_loop), ("batched", kl_threshold_bins)):
            start = time.perf_counter()
            bins[name] = [fn(h, levels) for h in hists]
            times[name] = (time.perf_counter() - start) / len(hists)
        rows.append(
            [
                f"KL search, {label}: {len(hists)} histograms, {levels} levels (ms / histogram)",
                times["loop"] * 1e3,
                times["batched"] * 1e3,
                times["loop"] / times["batched"],
                str(bins["loop"] == bins["batched"]),
            ]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--baseline-ref", default=BASELINE_REF)
    ap.add_argument("--magika-files", type=int, default=64)
    ap.add_argument("--ocr-lines", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-ocr", action="store_true")
    ap.add_argument("--ocr-det", action="store_true", help="also the OCR det model (slow)")
    ap.add_argument("--only", nargs="*", help="workload names (substring match)")
    ap.add_argument("--no-kl", action="store_true", help="skip the KL search timing")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "before").mkdir()
        commit = extract_tree(args.baseline_ref, tmp / "before")
        trees = {"before": tmp / "before", "after": ROOT}
        inputs = prepare_inputs(args, tmp)
        rows = [] if args.no_kl else kl_search_rows(*inputs["magika"][::-1], "magika")
        if "rec" in inputs and not args.no_kl:
            rows += kl_search_rows(*inputs["rec"][::-1], "ocr rec")
        for name, (key, kwargs) in WORKLOADS.items():
            if key not in inputs or (args.only and not any(o in name for o in args.only)):
                continue
            model, data = inputs[key]
            best = {"before": float("inf"), "after": float("inf")}
            digests = {}
            for _ in range(args.repeat):
                for side, tree in trees.items():  # alternate: load changes hit both alike
                    spec = {
                        "model": model,
                        "data": data,
                        "output": str(tmp / f"{side}.onnx"),
                        "kwargs": kwargs,
                    }
                    res = run_one(tree, spec, tmp)
                    best[side] = min(best[side], res["seconds"])
                    digests[side] = res["sha256"]
                    print(f"{name} [{side}]: {res['seconds']:.2f} s", flush=True)
            rows.append(
                [
                    f"{name} (s)",
                    best["before"],
                    best["after"],
                    best["before"] / best["after"],
                    str(digests["before"] == digests["after"]),
                ]
            )
    print_table(
        f"ONNX quantize on CPU ({os.cpu_count()} cores; before = {commit[:10]}, "
        f"best of {args.repeat}; magika {args.magika_files} files, OCR {args.ocr_lines} lines)",
        ["workload", "before", "after", "speed-up", "same output"],
        rows,
    )


if __name__ == "__main__":
    main()
