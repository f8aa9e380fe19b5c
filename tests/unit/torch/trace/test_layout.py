import pytest
import torch

from modeloptim.torch.trace.layout import AtomTable, LayoutConflictError


def _mask(t, desc, root, keep):
    return t.keep_mask(desc, root, torch.tensor(keep, dtype=torch.bool)).tolist()


def test_concat_then_tie_halves_like_swiglu():
    t = AtomTable()
    w = t.new_desc(8)  # a Linear's 8 outputs
    gate, up = t.split(w, [4, 4])
    t.unify(gate, up)  # gate * up
    root = t.leaves(gate)[0]
    assert t.leaves(w) == [root]
    assert _mask(t, w, root, [1, 0, 0, 1]) == [True, False, False, True] * 2


def test_flatten_block_layout():
    t = AtomTable()
    c, hw = t.new_desc(3), t.new_desc(4)
    flat = [(c[0][0], hw[0][0])]
    root = t.leaves(c)[0]
    assert _mask(t, flat, root, [1, 0, 1]) == [True] * 4 + [False] * 4 + [True] * 4


def test_factor_into_heads_and_unify_with_product():
    t = AtomTable()
    hidden = t.new_desc(12)
    heads, head_dim = t.factor(hidden, [3, 4])
    other = [(t.new(3), t.new(4))]
    t.unify(other, hidden)
    h_root = t.leaves(heads)[0]
    assert t.leaves(other) == [h_root, t.leaves(head_dim)[0]]
    # keeping heads 0 and 2 keeps feature blocks [0:4] and [8:12]
    assert _mask(t, hidden, h_root, [1, 0, 1]) == [True] * 4 + [False] * 4 + [True] * 4
    d_root = t.leaves(head_dim)[0]
    assert _mask(t, hidden, d_root, [1, 1, 0, 0]) == [True, True, False, False] * 3


def test_concat_offsets_refine_a_plain_dim():
    t = AtomTable()
    a, b, whole = t.new_desc(2), t.new_desc(3), t.new_desc(5)
    t.unify([*a, *b], whole)
    assert t.normalize(whole) == [[t.leaves(a)[0]], [t.leaves(b)[0]]]
    assert _mask(t, whole, t.leaves(b)[0], [0, 1, 0]) == [True, True, False, True, False]


def test_incompatible_products_conflict():
    t = AtomTable()
    x = [(t.new(2), t.new(6))]
    y = [(t.new(3), t.new(4))]
    with pytest.raises(LayoutConflictError):
        t.unify(x, y)
    with pytest.raises(LayoutConflictError, match="sizes differ"):
        t.unify(t.new_desc(3), t.new_desc(4))


def test_freeze_propagates_through_union_and_split():
    t = AtomTable()
    a, b = t.new_desc(4), t.new_desc(4)
    t.freeze(a, "model input")
    t.unify(a, b)
    assert t.reasons(t.leaves(b)[0]) == ["model input"]
    p, q = t.split(b, [1, 3])
    assert t.reasons(t.leaves(q)[0]) == ["model input"]
    assert t.reasons(t.leaves(p)[0]) == []  # size-1 atoms are never frozen (nothing to prune)
