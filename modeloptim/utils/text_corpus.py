"""Offline text corpora for calibration and evaluation.

The default corpus is built from the docstrings of the Python standard library, read with
``ast`` from the source files (nothing is imported, so no module side effects run). Modules are
split into two disjoint halves by a stable hash of their name, so calibration text never
overlaps evaluation text and the split is the same on every machine with the same Python.
"""

from __future__ import annotations

import ast
import functools
import sysconfig
import zlib
from enum import Enum
from pathlib import Path

__all__ = ["CorpusSplit", "read_text", "stdlib_docstring_corpus"]

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "turtledemo"}


class CorpusSplit(str, Enum):
    """Which disjoint half of the standard-library corpus to use."""

    CALIB = "calib"
    EVAL = "eval"


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _split_of(module: str) -> CorpusSplit:
    # crc32 is stable across processes and platforms (unlike hash()).
    return CorpusSplit.CALIB if zlib.crc32(module.encode()) % 2 == 0 else CorpusSplit.EVAL


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    nodes = [
        tree,
        *(
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ),
    ]
    docs = (ast.get_docstring(n, clean=True) for n in nodes)
    return [d for d in docs if d and len(d) > 40]


@functools.lru_cache(maxsize=1)
def _docstrings_by_split() -> dict[CorpusSplit, tuple[str, ...]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out: dict[CorpusSplit, list[str]] = {s: [] for s in CorpusSplit}
    seen: set[str] = set()  # some docstrings are copied between modules (abc/_py_abc)
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]):
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        split = _split_of(_module_name(path, root))
        for doc in _docstrings(source):
            if doc not in seen:
                seen.add(doc)
                out[split].append(doc)
    if not seen:
        raise RuntimeError(f"no standard-library docstrings found under {root}")
    return {s: tuple(v) for s, v in out.items()}


def stdlib_docstring_corpus(split: CorpusSplit | str = CorpusSplit.CALIB) -> str:
    """Return the docstrings of one half of the standard library as one text.

    Args:
        split: ``"calib"`` or ``"eval"``; the halves share no module and no docstring.

    Returns:
        The docstrings, module by module in sorted order, separated by blank lines
        (close to 1 MB of English technical prose per half).
    """
    try:
        split = CorpusSplit(split)
    except ValueError:
        raise ValueError(f"split must be 'calib' or 'eval', got {split!r}") from None
    return "\n\n".join(_docstrings_by_split()[split])


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file given by the user (calibration or evaluation text).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: the file is empty or not valid UTF-8.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"text file {str(p)!r} is not valid UTF-8: {err}") from None
    if not text.strip():
        raise ValueError(f"text file {str(p)!r} is empty")
    return text
