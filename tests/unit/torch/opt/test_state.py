import importlib.util
import pathlib
import subprocess
import sys

import pytest
import torch
from torch import nn

import modeloptim.torch.opt as mto

HERE = pathlib.Path(__file__).parent


def _load_toy():
    spec = importlib.util.spec_from_file_location("_toy_modes", HERE / "_toy_modes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


toy = _load_toy()


def _scaled_model():
    model = mto.apply_mode(toy.make_model(), [("scale", {"init": 0.5})], registry=toy.TOY)
    with torch.no_grad():  # stands in for calibration: state that only lives in buffers
        model[0].out_scale.copy_(torch.linspace(0.1, 2.0, 16))
    return model


def test_apply_mode_records_config_and_metadata():
    model = _scaled_model()
    state = mto.modelopt_state(model, registry=toy.TOY)
    assert state["format_version"] == mto.STATE_FORMAT_VERSION
    assert [r["mode"] for r in state["modes"]] == ["scale"]
    assert state["modes"][0]["config"] == {"init": 0.5}
    assert state["modes"][0]["metadata"] == {"layers": ["0", "2"]}
    assert isinstance(model[0], toy.ScaledLinear)


def test_bad_config_rejected_before_model_changes():
    model = toy.make_model()
    with pytest.raises(ValueError, match="inti"):
        mto.apply_mode(model, [("scale", {"inti": 2.0})], registry=toy.TOY)
    assert type(model[0]) is nn.Linear
    assert not mto.is_converted(model)


def test_mode_order_error_names_both_modes():
    model = mto.apply_mode(toy.make_model(), ["scale", "freeze"], registry=toy.TOY)
    with pytest.raises(ValueError, match=r"mode 'scale' may not follow mode 'freeze'"):
        mto.apply_mode(model, "scale", registry=toy.TOY)
    with pytest.raises(KeyError, match="unknown mode 'nope'"):
        mto.apply_mode(model, "nope", registry=toy.TOY)


def test_restore_from_state_in_memory_is_exact():
    model = _scaled_model()
    x = torch.randn(5, 8)
    state = mto.modelopt_state(model, registry=toy.TOY)
    fresh = mto.restore_from_modelopt_state(toy.make_model(), state, registry=toy.TOY)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), model(x))


def test_save_restore_round_trip_in_fresh_process(tmp_path):
    model = _scaled_model()
    ckpt = tmp_path / "model.pth"
    mto.save(model, ckpt, registry=toy.TOY)
    x = torch.randn(7, 8)
    torch.save(x, tmp_path / "x.pt")
    script = f"""
import importlib.util, torch, modeloptim.torch.opt as mto
spec = importlib.util.spec_from_file_location("_toy_modes", {str(HERE / "_toy_modes.py")!r})
toy = importlib.util.module_from_spec(spec); spec.loader.exec_module(toy)
m = mto.restore(toy.make_model(), {str(ckpt)!r}, registry=toy.TOY)
x = torch.load({str(tmp_path / "x.pt")!r})
torch.save(m(x), {str(tmp_path / "y.pt")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    y_fresh = torch.load(tmp_path / "y.pt")
    assert torch.equal(y_fresh, model(x))


def _snapshot(model):
    return [type(m) for m in model.modules()], {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model, snap):
    types, sd = snap
    assert [type(m) for m in model.modules()] == types
    now = model.state_dict()
    assert now.keys() == sd.keys()
    assert all(torch.equal(now[k], sd[k]) for k in sd)
    assert not mto.is_converted(model)


def test_restore_into_different_architecture_fails_and_leaves_model(tmp_path):
    mto.save(_scaled_model(), tmp_path / "m.pth", registry=toy.TOY)
    other = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    snap = _snapshot(other)
    with pytest.raises(ValueError, match="architecture"):
        mto.restore(other, tmp_path / "m.pth", registry=toy.TOY)
    _assert_unchanged(other, snap)


def test_restore_truncated_and_corrupted_files(tmp_path):
    path = tmp_path / "m.pth"
    mto.save(_scaled_model(), path, registry=toy.TOY)
    data = path.read_bytes()
    model = toy.make_model()
    snap = _snapshot(model)
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        mto.restore(model, tmp_path / "trunc.pth", registry=toy.TOY)
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match="truncated or corrupted"):
        mto.restore(model, tmp_path / "junk.pth", registry=toy.TOY)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mto.restore(model, tmp_path / "missing.pth", registry=toy.TOY)
    _assert_unchanged(model, snap)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restore_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"modelopt_state": Evil(), "model_state_dict": {}}, path)
    model = toy.make_model()
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        mto.restore(model, path, registry=toy.TOY)
    _assert_unchanged(model, snap)


def test_state_from_newer_version_is_refused(tmp_path):
    model = _scaled_model()
    state = mto.modelopt_state(model, registry=toy.TOY)
    state["format_version"] = mto.STATE_FORMAT_VERSION + 1
    target = toy.make_model()
    snap = _snapshot(target)
    with pytest.raises(ValueError, match="newer modeloptim"):
        mto.restore_from_modelopt_state(target, state, registry=toy.TOY)
    _assert_unchanged(target, snap)
    torch.save(
        {"modelopt_state": state, "model_state_dict": model.state_dict()}, tmp_path / "n.pth"
    )
    with pytest.raises(ValueError, match="upgrade modeloptim"):
        mto.restore(target, tmp_path / "n.pth", registry=toy.TOY)
    _assert_unchanged(target, snap)


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="not a modeloptim checkpoint"):
        mto.restore(toy.make_model(), tmp_path / "w.pth", registry=toy.TOY)


def test_restore_into_converted_model_is_refused():
    model = _scaled_model()
    state = mto.modelopt_state(model, registry=toy.TOY)
    with pytest.raises(ValueError, match="unmodified model"):
        mto.restore_from_modelopt_state(model, state, registry=toy.TOY)


def test_non_plain_metadata_is_rejected():
    reg = mto.ModeRegistry("bad")

    class Cfg(toy.FreezeConfig):
        pass

    reg.register("bad", Cfg)(lambda m, c: (m, {"obj": object()}))
    with pytest.raises(TypeError, match="only tensors"):
        mto.apply_mode(toy.make_model(), "bad", registry=reg)


def test_save_is_atomic_when_serialization_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.pth"
    path.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        mto.save(_scaled_model(), path, registry=toy.TOY)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]
