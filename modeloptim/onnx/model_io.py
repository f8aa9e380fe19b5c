"""Loading, validating and atomically saving ONNX models.

Every entry point goes through :func:`load_model` so that a missing file or a file that is not
an ONNX model is reported with the argument name before anything is written, and through
:func:`save_model_atomic` so that a failed run never leaves a half-written output behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# Models above this size must store their tensors outside the protobuf (2 GiB hard limit).
_PROTOBUF_LIMIT = 2**31 - 2**20


def load_model(onnx_path: str | os.PathLike[str] | onnx.ModelProto, arg: str = "onnx_path"):
    """Load an ONNX model from a path (or pass a ``ModelProto`` through as a copy).

    Args:
        onnx_path: path of a ``.onnx`` file, or an in-memory ``onnx.ModelProto``.
        arg: name of the user's argument, used in error messages.

    Returns:
        A fresh ``onnx.ModelProto`` (the caller's object or file is never modified).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a parseable ONNX model.
    """
    import onnx

    if isinstance(onnx_path, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(onnx_path)
        return copy
    if not isinstance(onnx_path, (str, os.PathLike)):
        raise TypeError(f"{arg} must be a path or an onnx.ModelProto, got {type(onnx_path)!r}")
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"{arg}: no such ONNX file: {str(path)!r}")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf raises several unrelated types on garbage input
        raise ValueError(f"{arg}: {str(path)!r} is not a valid ONNX model ({err})") from None
    if not model.graph.node and not model.graph.output:
        raise ValueError(f"{arg}: {str(path)!r} is not a valid ONNX model (empty graph)")
    return model


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 digest of a file (used to prove inputs stay untouched)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_output_path(onnx_path: str | os.PathLike[str], suffix: str) -> Path:
    """``model.onnx`` -> ``model.<suffix>.onnx`` next to the input."""
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}.{suffix}.onnx")


def save_model_atomic(model: onnx.ModelProto, output_path: str | os.PathLike[str]) -> Path:
    """Check ``model`` with ``onnx.checker`` and write it atomically (temp file + rename).

    Args:
        model: the model to write.
        output_path: destination path; its folder must exist.

    Returns:
        The destination as a ``Path``.
    """
    import onnx

    out = Path(output_path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output_path: folder {str(out.parent)!r} does not exist")
    large = model.ByteSize() > _PROTOBUF_LIMIT
    onnx.checker.check_model(model, full_check=False) if not large else None
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        if large:
            # External data goes next to the model; the checker reads it back from the path.
            onnx.save_model(model, tmp, save_as_external_data=True, location=f"{out.name}.data")
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if large:
        onnx.checker.check_model(str(out))
    return out
