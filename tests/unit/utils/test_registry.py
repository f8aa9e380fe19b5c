"""`Registry`: decorator registration, lookup, clear errors."""

from __future__ import annotations

import pytest

from modeloptim.utils.registry import Registry


def test_register_lookup_replace_and_iterate():
    reg: Registry[object] = Registry("method")

    @reg.register("b")
    def b() -> int:
        return 2

    @reg.register("a")
    def a() -> int:
        return 1

    assert reg["a"]() == 1
    assert reg["b"] is b
    assert "a" in reg
    assert "c" not in reg
    assert list(reg) == ["a", "b"]
    assert len(reg) == 2
    reg.register("a")(b)  # a later registration replaces the earlier one
    assert reg["a"] is b
    assert repr(reg) == "Registry('method', ['a', 'b'])"


def test_unknown_name_and_bad_name_are_clear_errors():
    reg: Registry[int] = Registry("importance")
    reg.register("magnitude")(1)
    with pytest.raises(ValueError, match=r"importance: expected one of \['magnitude'\], got 'x'"):
        reg["x"]
    with pytest.raises(ValueError, match="got None"):
        reg[None]  # type: ignore[index]
    with pytest.raises(TypeError, match="name: expected a non-empty string"):
        reg.register("")


def test_prune_importance_uses_it():
    from modeloptim.torch.prune import IMPORTANCE

    assert {"magnitude", "gradient", "activation"} <= set(IMPORTANCE)
    with pytest.raises(ValueError, match="importance: expected one of"):
        IMPORTANCE["nope"]
