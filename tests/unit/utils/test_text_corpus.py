import pytest

from modeloptim.utils.text_corpus import _docstrings_by_split, read_text, stdlib_docstring_corpus


def test_calib_and_eval_halves_are_disjoint_and_substantial():
    calib = stdlib_docstring_corpus("calib")
    evals = stdlib_docstring_corpus("eval")
    assert len(calib) > 200_000
    assert len(evals) > 200_000
    # Disjoint by module: long paragraphs of one half do not appear in the other.
    paras = [p for p in calib.split("\n\n") if len(p) > 400]
    assert len(paras) > 100
    assert not any(p in evals for p in paras)


def test_corpus_is_deterministic():
    _docstrings_by_split.cache_clear()
    first = stdlib_docstring_corpus("eval")
    _docstrings_by_split.cache_clear()
    assert stdlib_docstring_corpus("eval") == first


def test_bad_split_names_argument():
    with pytest.raises(ValueError, match="split"):
        stdlib_docstring_corpus("train")


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        read_text(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        read_text(empty)
    good = tmp_path / "good.txt"
    good.write_text("hello world")
    assert read_text(good) == "hello world"
