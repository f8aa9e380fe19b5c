"""Bad input: clear errors, nothing written, nothing half-written."""

import errno
import os

import pytest
import torch

from modeloptim.torch.export import export_hf_checkpoint, load_hf_checkpoint
from modeloptim.torch.export import hf as hf_mod
from modeloptim.torch.export.packers import UnsupportedFormatError
from modeloptim.torch.quantization.model_quant import disable_quantizer

from ._tiny import logits, preset, quantized, tiny_llama

pytestmark = pytest.mark.hf


def _leftovers(parent, name):
    return [p for p in os.listdir(parent) if name in p]


def test_unquantized_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no quantized layer"):
        export_hf_checkpoint(tiny_llama(), tmp_path / "c")
    assert _leftovers(tmp_path, "c") == []


def test_partly_quantized_exports_rest_in_float(tmp_path):
    model = quantized(tiny_llama(), preset("FP8_DEFAULT_CFG"))
    disable_quantizer(model, "*mlp*")
    report = export_hf_checkpoint(model, tmp_path / "c")
    assert "model.layers.0.mlp.down_proj" in report.excluded
    assert report.quantized_layers == 8  # q/k/v/o of two layers
    loaded = load_hf_checkpoint(tmp_path / "c")
    assert loaded.model.layers[0].mlp.down_proj.weight.dtype == torch.float32
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)


def test_unsupported_combination_names_the_layer(tmp_path):
    model = quantized(tiny_llama(), preset("FP8_DEFAULT_CFG"))
    model.model.layers[1].mlp.up_proj.output_quantizer.enable()
    with pytest.raises(UnsupportedFormatError, match=r"layers\.1\.mlp\.up_proj.*output"):
        export_hf_checkpoint(model, tmp_path / "c")
    assert _leftovers(tmp_path, "c") == []


def test_unsupported_format_pair(tmp_path):
    cfg = preset("FP8_DEFAULT_CFG")
    cfg["quant_cfg"][1] = {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}}
    model = quantized(tiny_llama(), cfg)
    with pytest.raises(UnsupportedFormatError, match=r"weight fp8 with input int8.*supported"):
        export_hf_checkpoint(model, tmp_path / "c")


def test_bad_arguments(tmp_path):
    model = quantized(tiny_llama(), preset("FP8_DEFAULT_CFG"))
    with pytest.raises(ValueError, match="layout: expected one of"):
        export_hf_checkpoint(model, tmp_path / "c", layout="gguf")
    with pytest.raises(ValueError, match="dtype"):
        export_hf_checkpoint(model, tmp_path / "c", dtype=torch.int8)
    with pytest.raises(TypeError, match="model: expected a Hugging Face"):
        export_hf_checkpoint(torch.nn.Linear(2, 2), tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="not a modeloptim export"):
        load_hf_checkpoint(tmp_path)


def test_no_space_leaves_nothing(tmp_path, monkeypatch):
    model = quantized(tiny_llama(), preset("NVFP4_DEFAULT_CFG"))

    class Usage:
        free = 1000

    monkeypatch.setattr("modeloptim.torch.export.writer.shutil.disk_usage", lambda _p: Usage)
    with pytest.raises(OSError, match="MiB needed") as info:
        export_hf_checkpoint(model, tmp_path / "c")
    assert info.value.errno == errno.ENOSPC
    assert _leftovers(tmp_path, "c") == []


def test_failure_mid_write_leaves_old_checkpoint_intact(tmp_path, monkeypatch):
    model = quantized(tiny_llama(), preset("FP8_DEFAULT_CFG"))
    export_hf_checkpoint(model, tmp_path / "c")
    before = sorted(os.listdir(tmp_path / "c"))

    def broken(path, obj):
        raise OSError(errno.EIO, "disk went away")

    monkeypatch.setattr(hf_mod, "write_json", broken)
    with pytest.raises(OSError, match="disk went away"):
        export_hf_checkpoint(model, tmp_path / "c")
    assert sorted(os.listdir(tmp_path / "c")) == before
    assert _leftovers(tmp_path, ".c.") == []  # temp folder removed


def test_unwritable_dir(tmp_path, monkeypatch):
    # Simulated: the tests may run as root, which ignores folder permissions.
    model = quantized(tiny_llama(), preset("FP8_DEFAULT_CFG"))

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr("modeloptim.utils.io.tempfile.mkdtemp", denied)
    with pytest.raises(PermissionError):
        export_hf_checkpoint(model, tmp_path / "c")
    assert _leftovers(tmp_path, "c") == []


def test_unwritable_target_is_a_file(tmp_path):
    model = quantized(tiny_llama(), preset("FP8_DEFAULT_CFG"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((FileExistsError, NotADirectoryError)):
        export_hf_checkpoint(model, blocker / "c")
    assert blocker.read_text() == "x"


def test_int4_group_not_dividing_in_features_warns_and_still_reloads(tmp_path):
    model = quantized(tiny_llama(hidden=192, inter=256), preset("INT4_AWQ_CFG"))
    with pytest.warns(UserWarning, match="not a multiple of the INT4 group size"):
        export_hf_checkpoint(model, tmp_path / "c")
    assert torch.equal(logits(load_hf_checkpoint(tmp_path / "c")), logits(model))
