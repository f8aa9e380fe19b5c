"""onnxruntime helpers: sessions, and running a model while capturing intermediate tensors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

Feed = dict[str, np.ndarray]


def make_session(
    model: onnx.ModelProto | bytes | str | os.PathLike[str],
    threads: int | None = None,
    optimize: bool = True,
    spin: bool = True,
) -> ort.InferenceSession:
    """Create a CPU ``InferenceSession`` from a model, its bytes or a path.

    ``spin=False`` stops its idle intra-op threads from busy-waiting for the next run: for
    the many short-lived or interleaved sessions of calibration (on a machine with few cores,
    a session's spinning threads slow the next session's run); latency measurements keep the
    default.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if isinstance(model, (str, os.PathLike)):
        source: bytes | str = str(model)
    elif isinstance(model, bytes):
        source = model
    else:
        source = model.SerializeToString()
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """Return a copy of ``model`` whose graph outputs are exactly ``names``."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    known = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
    for name in names:
        info = onnx.ValueInfoProto()
        if name in known:
            info.CopyFrom(known[name])
        else:
            info.name = name  # onnxruntime infers the type of an untyped output
        copy.graph.output.append(info)
    return copy


def run_capture(
    model: onnx.ModelProto,
    names: Sequence[str],
    feeds: Sequence[Feed],
    callback: Callable[[dict[str, np.ndarray]], None],
    progress: str | None = None,
    chunk: int = 256,
    spin: bool = True,
) -> None:
    """Run every feed and hand ``{name: value}`` of the requested tensors to ``callback``.

    Graph optimizations are off so that every tensor still exists. Tensors are captured in
    chunks of ``chunk`` names per session to bound peak memory on large graphs. ``spin``: see
    :func:`make_session`.
    """
    from tqdm.auto import tqdm

    names = list(dict.fromkeys(names))
    chunks = [names[i : i + chunk] for i in range(0, len(names), chunk)] or [[]]
    total = len(chunks) * len(feeds)
    with tqdm(total=total, desc=progress or "onnxruntime", disable=progress is None) as bar:
        for part in chunks:
            if not part:
                continue
            session = make_session(with_outputs(model, part), optimize=False, spin=spin)
            for feed in feeds:
                values = session.run(part, feed)
                callback(dict(zip(part, values, strict=True)))
                bar.update(1)


def float_tensor_names(model: onnx.ModelProto) -> dict[str, int]:
    """Map every main-graph tensor with a known type to its ONNX elem type."""
    types: dict[str, int] = {}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types
