"""Perplexity of a causal LM over fixed token windows."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["perplexity", "token_windows"]

# Characters of text tokenized per requested token: generous for English prose (~4 chars per
# token) so long corpora are not tokenized whole when only a few windows are needed.
_CHARS_PER_TOKEN = 8


def token_windows(
    tokenizer: Any, text: str, seq_len: int, max_windows: int | None = None
) -> torch.Tensor:
    """Tokenize ``text`` and cut it into non-overlapping windows.

    Args:
        tokenizer: a HF tokenizer.
        text: the text.
        seq_len: tokens per window.
        max_windows: keep at most this many windows (``None``: all).

    Returns:
        LongTensor of shape ``[n_windows, seq_len]``.

    Raises:
        ValueError: bad ``seq_len``/``max_windows`` or text too short for one window.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be >= 1 or None, got {max_windows}")
    if max_windows is not None:
        text = text[: seq_len * max_windows * _CHARS_PER_TOKEN]
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    n = ids.numel() // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(
            f"text has {ids.numel()} tokens, fewer than one window of seq_len={seq_len}"
        )
    return ids[: n * seq_len].view(n, seq_len).clone()


@torch.no_grad()
def perplexity(
    model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 1, progress: bool = False
) -> float:
    """Perplexity ``exp(mean NLL)`` of next-token prediction over all windows.

    Args:
        model: causal LM returning ``.logits`` of shape ``[B, T, vocab]``.
        windows: LongTensor ``[n, T]``; each window is scored independently (T-1 predictions).
        batch_size: windows per forward.
        progress: show a tqdm bar.
    """
    if windows.dim() != 2 or windows.dtype != torch.long:
        raise ValueError(
            f"windows must be a LongTensor [n, T], got {windows.dtype} {tuple(windows.shape)}"
        )
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for start in tqdm(
        range(0, windows.shape[0], batch_size), disable=not progress, desc="perplexity", leave=False
    ):
        batch = windows[start : start + batch_size].to(device)
        logits = model(input_ids=batch).logits[:, :-1].float()
        target = batch[:, 1:]
        nll += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
        ).item()
        count += target.numel()
    return math.exp(nll / count)
