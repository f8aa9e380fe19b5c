"""snap_model_scales: idempotent, makes export a no-op on the model, works on packed weights."""

import pytest
import torch

from modeloptim.torch.export import export_hf_checkpoint, load_hf_checkpoint, snap_model_scales
from modeloptim.torch.export.scales import ReciprocalRule
from modeloptim.torch.quantization.compress import compress

from ._tiny import logits, preset, quantized, tiny_llama

pytestmark = pytest.mark.hf


def test_snap_first_then_export_changes_nothing(tmp_path):
    model = quantized(tiny_llama(layers=4), preset("W4A8_AWQ_BETA_CFG"))
    moved = snap_model_scales(model)
    assert moved  # 4 layers of per-block INT4 scales: some are not expressible
    assert snap_model_scales(model) == []  # idempotent
    before = logits(model)
    report = export_hf_checkpoint(model, tmp_path / "c")
    assert report.snapped == []
    assert torch.equal(logits(model), before)  # the model evaluated is what was exported
    assert torch.equal(logits(load_hf_checkpoint(tmp_path / "c")), before)


def test_snapped_scales_are_expressible_and_close():
    model = quantized(tiny_llama(layers=4), preset("INT8_SMOOTHQUANT_CFG"))
    olds = {
        n: m.weight_quantizer.amax.clone() for n, m in model.named_modules() if n.endswith("proj")
    }
    snap_model_scales(model)
    rule = ReciprocalRule(127.0)
    for n, old in olds.items():
        new = model.get_submodule(n).weight_quantizer.amax
        m = rule.multiplier(new)
        s, m2 = rule.encode_multiplier(m)
        assert torch.equal(m2, m)  # every multiplier now has a float32 engine scale
        assert torch.equal(1 / s, m) or torch.equal(torch.div(torch.ones_like(s), s), m)
        torch.testing.assert_close(new, old, rtol=3e-6, atol=0)  # moved by a few ulps at most


@pytest.mark.parametrize(
    ("name", "algo"),
    [("INT8_SMOOTHQUANT_CFG", "W8A8_SQ_PER_CHANNEL"), ("W4A8_AWQ_BETA_CFG", "W4A8_AWQ")],
)
def test_compressed_model_reloads_exactly(tmp_path, name, algo):
    model = quantized(tiny_llama(), preset(name))
    compress(model)  # packed INT multipliers are snapped in the packed tensors themselves
    report = export_hf_checkpoint(model, tmp_path / "c")
    assert report.quant_algo == algo
    assert torch.equal(logits(load_hf_checkpoint(tmp_path / "c")), logits(model))
