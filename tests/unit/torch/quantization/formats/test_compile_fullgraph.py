"""``torch.compile(fullgraph=True)`` of fake-quantized models (CPU, eval, after calibration).

Every format's fake quantization must trace into one graph (no data-dependent Python control
flow; ``fullgraph=True`` raises on any graph break) and compute the same bits as eager mode,
including the ``amax <= 2**-24`` rule (zeros), which eager mode applies behind a
``mask.any()`` check. Eager mode is itself pinned to float64 references by the format tests.

The float ops around the quantizers are Linear + ReLU only: inductor's CPU code for those is
bit-exact with eager, so the comparison is exact (a conv + mean model is not: inductor
reorders that reduction, about 1 ulp). Inductor is used where a C++ compiler is present (the
CI image has one); otherwise ``aot_eager``, which still proves there is no graph break.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.conversion import named_tensor_quantizers

_NVFP4 = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}}
_MXFP8 = {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}}

#: layer name -> quantizer attributes for its weight and input quantizers
FORMATS: dict[str, dict[str, Any]] = {
    "fp8": {"num_bits": (4, 3), "axis": None},
    "int8_tensor": {"num_bits": 8, "axis": None},
    "int8_channel": {"num_bits": 8, "axis": 0},
    "int4_block_static": {"num_bits": 4, "block_sizes": {-1: 32}},
    "int4_block_dynamic": {"num_bits": 4, "block_sizes": {-1: 32, "type": "dynamic"}},
    "nvfp4": _NVFP4,
    "mxfp8": _MXFP8,
}
#: formats with a calibrated amax, whose ``amax <= 2**-24`` rule is exercised below
TINY_RULE = ("fp8", "int8_channel", "int4_block_static", "nvfp4")


class _MLP(torch.nn.Module):
    def __init__(self, names: tuple[str, ...], width: int = 64) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleDict({n: torch.nn.Linear(width, width) for n in names})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers.values():
            x = torch.relu(layer(x)) * 2.0
        return x


def _quantized(names: tuple[str, ...]) -> tuple[_MLP, torch.Tensor]:
    torch.manual_seed(0)
    model = _MLP(names).eval()
    entries = [
        {"quantizer_name": f"*{n}.{kind}_quantizer", "cfg": FORMATS[n]}
        for n in names
        for kind in ("weight", "input")
    ]
    x = torch.randn(8, 64)
    mtq.quantize(model, {"quant_cfg": entries, "algorithm": "max"}, lambda m: m(x))
    return model, x


def _zero_some_amax(model: torch.nn.Module) -> int:
    """Set part of each calibrated amax to 0 (per-tensor ones: one weight whole) in place."""
    hit = 0
    for name, q in named_tensor_quantizers(model):
        layer = name.split(".")[1]
        if layer not in TINY_RULE or q.amax is None or not name.endswith("weight_quantizer"):
            continue
        with torch.no_grad():
            if q.amax.numel() == 1:
                q.amax.zero_()
            else:
                q.amax.view(-1)[::3] = 0.0
        hit += 1
    return hit


def _backend() -> str:
    return "inductor" if shutil.which("g++") or shutil.which("c++") else "aot_eager"


def _check_compiled_equals_eager(names: tuple[str, ...], backend: str) -> None:
    model, x = _quantized(names)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    xs = [x, torch.randn(8, 64, generator=torch.Generator().manual_seed(1)) * 3]
    with torch.no_grad():
        for xi in xs:
            torch.testing.assert_close(compiled(xi), model(xi), rtol=0, atol=0)
        float_out = _MLP(names).eval()
        float_out.load_state_dict(model.state_dict(), strict=False)
        assert (float_out(x) - model(x)).abs().max() > 1e-3  # the quantizers did act
        # amax buffers change in place: same graph, now through the amax <= 2**-24 branch.
        before = model(x)
        assert _zero_some_amax(model) == sum(n in TINY_RULE for n in names)
        for xi in xs:
            got, want = compiled(xi), model(xi)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert not torch.equal(before, model(x))


def test_all_formats_trace_without_graph_breaks_and_match_eager():
    """All seven formats in one model; aot_eager keeps the check fast (a few seconds)."""
    _check_compiled_equals_eager(tuple(FORMATS), "aot_eager")


def test_inductor_matches_eager_bit_exact():
    """One inductor compile (two formats: compiling is slow on 2 cores, 10-15 s cold)."""
    _check_compiled_equals_eager(("int8_channel", "nvfp4"), _backend())


@pytest.mark.parametrize("name", ["fp8", "int8_tensor", "nvfp4"])
def test_explain_counts_no_break_per_format(name: str):
    model, x = _quantized((name,))
    torch._dynamo.reset()
    with torch.no_grad():
        report = torch._dynamo.explain(model)(x)
    assert report.graph_break_count == 0, [b.reason for b in report.break_reasons]
    assert report.graph_count == 1


def test_changing_batch_size_recompiles_dynamic_without_breaks():
    """A second batch size makes dynamo retrace with symbolic sizes; still one graph."""
    names = ("fp8", "int8_tensor", "int4_block_dynamic", "nvfp4", "mxfp8")
    model, _ = _quantized(names)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for batch in (8, 5, 11):
            x = torch.randn(batch, 64, generator=gen)
            torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
