"""Calibration / reference data for ONNX models: validation and batching.

Accepted forms (``data``):

* ``None``: random data of the model's input shapes, with a loud warning;
* a ``numpy.ndarray`` (single-input models), split along axis 0 into batches;
* a ``dict`` of input name -> array (all with the same leading length), split likewise;
* a ``list`` of such dicts (or arrays), one feed each: for inputs whose shapes vary;
* a ``.npy`` path (an array) or ``.npz`` path (a dict of arrays).

Names, ranks, fixed dimensions and dtype kinds are checked against the model's inputs before
anything runs, and errors name ``calibration_data`` and what was expected.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

_LOG = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """One graph input: name, numpy dtype and shape (``None`` or a string for free dims)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    def describe(self) -> str:
        """Human-readable ``name: dtype[dims]`` for error messages."""
        dims = ",".join("?" if not isinstance(d, int) else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """Return the specs of the model's real inputs (initializers excluded)."""
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        ttype = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type))
        shape: tuple[int | str | None, ...] = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in ttype.shape.dim
        )
        specs.append(InputSpec(value.name, dtype, shape))
    return specs


def random_feed(specs: Sequence[InputSpec], rng: np.random.Generator, free_dim: int = 32) -> Feed:
    """One random feed: free batch dims are 1, other free dims ``free_dim``."""
    feed = {}
    for spec in specs:
        shape = [
            d if isinstance(d, int) and d > 0 else (1 if i == 0 else free_dim)
            for i, d in enumerate(spec.shape)
        ]
        if spec.dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feed[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feed[spec.name] = rng.integers(0, 64, shape).astype(spec.dtype)
    return feed


def _load_path(path: str | os.PathLike[str], arg: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{arg}: no such file: {str(p)!r}")
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    raise ValueError(f"{arg}: expected a .npy or .npz file, got {str(p)!r}")


def _check_array(spec: InputSpec, arr: np.ndarray, arg: str, batched: bool) -> np.ndarray:
    arr = np.asarray(arr)
    if len(spec.shape) and arr.ndim != len(spec.shape):
        raise ValueError(
            f"{arg}: input {spec.name!r} has rank {arr.ndim} (shape {arr.shape}), the model "
            f"expects rank {len(spec.shape)} ({spec.describe()})"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, arr.shape, strict=False)):
        if batched and axis == 0:
            continue  # the leading axis is split into batches below
        if isinstance(want, int) and want > 0 and want != got:
            raise ValueError(
                f"{arg}: input {spec.name!r} has shape {arr.shape}, the model expects "
                f"{spec.describe()} (dimension {axis} must be {want})"
            )
    want_kind = "f" if spec.dtype.kind == "f" else ("b" if spec.dtype.kind == "b" else "i")
    got_kind = "f" if arr.dtype.kind == "f" else ("b" if arr.dtype.kind == "b" else "i")
    if arr.dtype.kind not in "fbiu" or want_kind != got_kind:
        raise ValueError(
            f"{arg}: input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}"
        )
    return arr.astype(spec.dtype, copy=False)


def _as_named(item: Any, specs: Sequence[InputSpec], arg: str) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        wanted = {s.name for s in specs}
        got = set(item)
        if got != wanted:
            missing, extra = sorted(wanted - got), sorted(got - wanted)
            raise ValueError(
                f"{arg}: input names do not match the model: missing {missing}, unknown "
                f"{extra}; expected {[s.describe() for s in specs]}"
            )
        return item
    if isinstance(item, np.ndarray):
        if len(specs) != 1:
            raise ValueError(
                f"{arg}: a single array needs a single-input model; this model has inputs "
                f"{[s.describe() for s in specs]}: pass a dict of name -> array"
            )
        return {specs[0].name: item}
    raise TypeError(
        f"{arg}: expected None, a numpy array, a dict of input name -> array, a list of "
        f"those, or a .npy/.npz path; got {type(item).__name__}"
    )


def _static_batch(specs: Sequence[InputSpec]) -> int | None:
    """The model's fixed batch size, if every input with a leading dimension fixes the same one."""
    fixed = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0]}
    return int(fixed.pop()) if len(fixed) == 1 else None


def make_feeds(
    data: Any,
    model: onnx.ModelProto,
    arg: str = "calibration_data",
    batch_size: int = 1,
    num_random: int = 4,
    seed: int = 0,
) -> list[Feed]:
    """Validate ``data`` against ``model``'s inputs and return a list of feeds for onnxruntime.

    Args:
        data: see the module docstring for the accepted forms.
        model: the (sanitized) model whose inputs the data must match.
        arg: the user's argument name for error messages.
        batch_size: samples per feed when splitting arrays along axis 0 (a static batch
            dimension in the model overrides it).
        num_random: number of random feeds when ``data`` is ``None``.
        seed: seed of the random fallback.

    Returns:
        A non-empty list of ``{input name: array}`` feeds.
    """
    specs = input_specs(model)
    if data is None:
        msg = (
            f"{arg} is None: calibrating on RANDOM data of the input shapes "
            f"({[s.describe() for s in specs]}). Accuracy of the result will be poor; pass "
            "real samples for a usable model."
        )
        warnings.warn(msg, UserWarning, stacklevel=3)
        _LOG.warning(msg)
        rng = np.random.default_rng(seed)
        return [random_feed(specs, rng) for _ in range(num_random)]
    if isinstance(data, (str, os.PathLike)):
        data = _load_path(data, arg)
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError(f"{arg}: empty list of samples")
        feeds = []
        for item in data:
            named = _as_named(item, specs, arg)
            feeds.append(
                {s.name: _check_array(s, named[s.name], arg, batched=False) for s in specs}
            )
        return feeds
    named = _as_named(data, specs, arg)
    arrays = {s.name: _check_array(s, named[s.name], arg, batched=True) for s in specs}
    lengths = {a.shape[0] if a.ndim else 1 for a in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"{arg}: all inputs need the same number of samples, got {lengths}")
    total = lengths.pop()
    if total == 0:
        raise ValueError(f"{arg}: no samples (leading dimension is 0)")
    static = _static_batch(specs)
    size = static or batch_size
    if static and total % static:
        raise ValueError(
            f"{arg}: the model has a fixed batch size {static}, so the number of samples must "
            f"be a multiple of it; got {total}"
        )
    return [
        {name: arr[start : start + size] for name, arr in arrays.items()}
        for start in range(0, total, size)
    ]
