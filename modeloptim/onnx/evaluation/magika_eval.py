"""magika file-type model: real-file features and top-1 agreement between model variants."""

from __future__ import annotations

import glob
import importlib
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_ROOTS = ("/usr/lib/python3*", "/usr/share/doc", "/usr/share/perl*", "/etc")


def magika_model_path() -> pathlib.Path:
    """Path of magika's ``standard_v3_3`` ONNX model inside the installed package."""
    pkg = importlib.import_module("magika")
    return pathlib.Path(str(pkg.__file__)).parent / "models" / "standard_v3_3" / "model.onnx"


def _is_real_file(path: pathlib.Path, min_size: int) -> bool:
    try:
        return path.is_file() and not path.is_symlink() and path.stat().st_size >= min_size
    except OSError:  # unreadable entries under /etc and friends
        return False


def real_files(roots: Sequence[str] = DEFAULT_ROOTS, min_size: int = 64) -> list[pathlib.Path]:
    """Sorted regular files (at least ``min_size`` bytes) under the glob ``roots``."""
    files: set[pathlib.Path] = set()
    for pattern in roots:
        for root in glob.glob(pattern):
            files.update(p for p in pathlib.Path(root).rglob("*") if _is_real_file(p, min_size))
    return sorted(files)


def sample_files(n: int, seed: int = 0, skip: int = 0) -> list[pathlib.Path]:
    """``n`` files drawn without replacement (after the first ``skip`` draws: disjoint sets)."""
    files = real_files()
    order = np.random.default_rng(seed).permutation(len(files))
    return [files[i] for i in order[skip : skip + n]]


class _Recorder:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.inputs: list[np.ndarray] = []

    def run(self, names, feeds):
        self.inputs.append(np.asarray(feeds["bytes"], dtype=np.int32))
        return self.session.run(names, feeds)


def file_features(paths: Sequence[pathlib.Path]) -> np.ndarray:
    """The exact ``bytes`` input magika feeds its model for each file: ``(n, 2048)`` int32."""
    from magika import Magika

    magika = Magika()
    recorder = _Recorder(magika._onnx_session)
    magika._onnx_session = recorder  # type: ignore[assignment]
    for path in paths:
        magika.identify_path(path)
    return np.concatenate(recorder.inputs) if recorder.inputs else np.zeros((0, 2048), np.int32)


def top1(model_path: Any, features: np.ndarray, batch: int = 256) -> np.ndarray:
    """Top-1 class index of the model at ``model_path`` for each feature row."""
    from modeloptim.onnx.ort_utils import make_session

    session = make_session(model_path)
    outs = [
        session.run(None, {"bytes": features[i : i + batch]})[0]
        for i in range(0, len(features), batch)
    ]
    return np.argmax(np.concatenate(outs), axis=-1)
