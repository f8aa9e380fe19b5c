"""Export round trip on SmolLM2-135M (or a tiny Llama): size, memory, time, logits error.

For each format: quantize (max calibration; AWQ/SmoothQuant presets use max calibration here
to keep the run short), export (ModelOpt layout), reload with load_hf_checkpoint from the
engine-facing scales alone, compare logits with the fake-quantized model, and mtq.compress a
copy to measure in-memory weight bytes. Also printed: how many quantizer scales export
snapped (and how much that moved the logits), and the logits error of the old reload rule
(``amax = scale * maxbound``) on the same checkpoint, for comparison. Baseline measured in
the same run: save_pretrained of the float model (size and time), printed with the ratios.

    PYTHONPATH=. python benchmarks/export_roundtrip.py [--tiny] [--formats NVFP4_DEFAULT_CFG ...]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

FORMATS = [
    "NVFP4_DEFAULT_CFG",
    "INT4_AWQ_CFG",
    "FP8_DEFAULT_CFG",
    "W4A8_AWQ_BETA_CFG",
    "INT8_SMOOTHQUANT_CFG",
]


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def _model(tiny: bool):
    if not tiny:
        from modeloptim.torch.utils.default_model import load_default_model

        return load_default_model()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(cfg).eval(), None


def _preset(name: str) -> dict:
    from modeloptim.torch.quantization.config import presets

    cfg = copy.deepcopy(getattr(presets, name))
    algo = cfg.get("algorithm")
    method = algo.get("method") if isinstance(algo, dict) else algo
    if method not in (None, "max"):
        cfg["algorithm"] = "max"
    return cfg


def _old_rule_reload(loaded, folder: Path) -> None:
    """Set static amaxes as the loader did before (``amax = scale * maxbound``)."""
    from modeloptim.torch.export.layers import format_kind
    from modeloptim.torch.export.loader import load_safetensors_folder
    from modeloptim.torch.quantization.nn import SequentialQuantizer

    def bound(q) -> float:
        return q.maxbound * (448.0 if format_kind(q.format) == "nvfp4" else 1.0)

    for key, t in load_safetensors_folder(folder).items():
        owner, _, leaf = key.rpartition(".")
        if leaf == "input_scale":
            q = loaded.get_submodule(owner).input_quantizer
        elif leaf == "weight_scale_2":
            wq = loaded.get_submodule(owner).weight_quantizer
            if not isinstance(wq, SequentialQuantizer):
                continue
            q = wq.quantizers()[1]
        elif leaf in ("k_scale", "v_scale"):
            q = getattr(loaded.get_submodule(owner.rpartition(".")[0]), f"{leaf[0]}_bmm_quantizer")
        else:
            continue
        q.amax = t.float().reshape(()) * bound(q)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from modeloptim.torch.export import export_hf_checkpoint, load_hf_checkpoint
    from modeloptim.torch.quantization.compress import compress, weight_nbytes
    from modeloptim.torch.quantization.model_quant import quantize

    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--formats", nargs="*", default=FORMATS)
    args = ap.parse_args()
    base, _ = _model(args.tiny)
    vocab = base.config.vocab_size
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(0, vocab, (1, 48), generator=g)
    evals = torch.randint(0, vocab, (1, 24), generator=g)
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    base.save_pretrained(tmp / "float")
    base_s = time.perf_counter() - t0
    base_bytes = _size(tmp / "float")
    base_mem = weight_nbytes(base)
    table = Table(title=f"export round trip ({'tiny Llama' if args.tiny else 'SmolLM2-135M'})")
    for col in (
        "format",
        "quant_algo",
        "bits/qweight",
        "file MB",
        "vs float",
        "export s",
        "vs save_pretrained",
        "reload s",
        "max |dlogit|",
        "old rule |dlogit|",
        "snapped",
        "snap |dlogit|",
        "quant |dlogit|",
        "mem MB",
        "mem vs float",
    ):
        table.add_column(col)
    for name in args.formats:
        model = copy.deepcopy(base)
        quantize(model, _preset(name), lambda m: m(input_ids=calib))
        with torch.no_grad():
            ref_float = base(input_ids=evals).logits
            before = model(input_ids=evals).logits
        t0 = time.perf_counter()
        rep = export_hf_checkpoint(model, tmp / name)
        exp_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = load_hf_checkpoint(tmp / name)
        load_s = time.perf_counter() - t0
        with torch.no_grad():
            after = model(input_ids=evals).logits
            err = (loaded(input_ids=evals).logits - after).abs().max()
            _old_rule_reload(loaded, tmp / name)
            old_err = (loaded(input_ids=evals).logits - after).abs().max()
        snap_err = (after - before).abs().max()
        quant_err = (before - ref_float).abs().max()
        compress(model)
        mem = weight_nbytes(model)
        size = _size(tmp / name)
        table.add_row(
            name,
            rep.quant_algo,
            f"{rep.quantized_weight_bits:.3f}",
            f"{size / 2**20:.1f}",
            f"{size / base_bytes:.3f}",
            f"{exp_s:.1f}",
            f"{exp_s / base_s:.2f}x",
            f"{load_s:.1f}",
            f"{float(err):.2e}",
            f"{float(old_err):.2e}",
            str(len(rep.snapped)),
            f"{float(snap_err):.2e}",
            f"{float(quant_err):.2e}",
            f"{mem / 2**20:.1f}",
            f"{mem / base_mem:.3f}",
        )
        del model, loaded
    Console(width=200).print(table)
    print(
        f"baseline: save_pretrained float {base_bytes / 2**20:.1f} MB in {base_s:.1f} s; "
        f"float weights in memory {base_mem / 2**20:.1f} MB"
    )


if __name__ == "__main__":
    main()
