"""The quantizer alias registry: every pattern match accepts a quantizer's own name or an alias."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.config.quantize import QuantizerCfgEntry
from modeloptim.torch.quantization.conversion import (
    quantizer_matches,
    replace_quant_module,
    set_quantizer_by_cfg,
)
from modeloptim.torch.quantization.quantizer_aliases import (
    QUANTIZER_ALIASES,
    QuantizerAlias,
    QuantizerAliasRegistry,
)


class _Tagged(nn.Linear):
    """A linear layer class of its own, so an alias function can be registered for it alone."""


@pytest.fixture
def model() -> Iterator[nn.Sequential]:
    """``[Linear, _Tagged, Linear]`` converted, with ``1.weight_quantizer`` aliased ``w.one``.

    The alias's owner is layer 2 (an ``nn.Linear``), to tell alias owners from own parents.
    """
    from modeloptim.torch.quantization.nn.modules.quant_linear import QuantLinear

    mtq.QuantModuleRegistry.register({_Tagged: "Tagged"})(
        type("_QuantTaggedLinear", (QuantLinear,), {})
    )
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), _Tagged(8, 8), nn.Linear(8, 4))
    replace_quant_module(net)
    wrapper = type(net[1])

    @QUANTIZER_ALIASES.register(wrapper)
    def alias(name: str, layer: nn.Module) -> QuantizerAlias | None:
        return QuantizerAlias("w.one", net[2]) if name == "1.weight_quantizer" else None

    try:
        yield net
    finally:
        QUANTIZER_ALIASES.unregister(wrapper)
        mtq.QuantModuleRegistry.unregister(_Tagged)


def _enabled(net: nn.Module) -> dict[str, bool]:
    return {
        f"{i}.{a}": getattr(net[i], a).is_enabled
        for i in range(3)
        for a in ("input_quantizer", "weight_quantizer")
    }


def test_alias_reaches_only_its_quantizer(model: nn.Sequential) -> None:
    before = _enabled(model)
    assert mtq.disable_quantizer(model, "w.one") == 1
    after = _enabled(model)
    assert {k for k in before if before[k] != after[k]} == {"1.weight_quantizer"}
    assert mtq.enable_quantizer(model, "w.*") == 1  # wildcards apply to aliases too
    assert _enabled(model) == before
    # a predicate is called with aliases too
    assert mtq.disable_quantizer(model, lambda n: n == "w.one") == 1
    assert not model[1].weight_quantizer.is_enabled


def test_parent_class_is_checked_against_the_aliases_owner(model: nn.Sequential) -> None:
    # the alias names layer 2 (nn.Linear) as the owner; its own parent is a "Tagged" layer
    entry = QuantizerCfgEntry(quantizer_name="w.one", parent_class="nn.Linear", enable=False)
    assert set_quantizer_by_cfg(model, [entry]) == {"w.one": 1}
    assert not model[1].weight_quantizer.is_enabled
    entry = QuantizerCfgEntry(quantizer_name="w.one", parent_class="Tagged", enable=True)
    with pytest.warns(UserWarning, match="'w.one' under Tagged matches no quantizer"):
        assert set_quantizer_by_cfg(model, [entry]) == {"w.one": 0}
    own = QuantizerCfgEntry(quantizer_name="1.*", parent_class="Tagged", enable=True)
    assert set_quantizer_by_cfg(model, [own]) == {"1.*": 3}
    assert model[1].weight_quantizer.is_enabled


def test_quantizer_matches_and_set_attribute(model: nn.Sequential) -> None:
    assert quantizer_matches("w.one", "1.weight_quantizer", model[1])
    assert quantizer_matches("1.weight_*", "1.weight_quantizer", model[1])
    assert not quantizer_matches("w.one", "1.input_quantizer", model[1])
    assert not quantizer_matches("w.one", "0.weight_quantizer", model[0])
    assert mtq.set_quantizer_attribute(model, "w.one", {"num_bits": 4, "axis": 0}) == 1
    assert model[1].weight_quantizer.format.describe().startswith("int4")
    assert model[0].weight_quantizer.format.describe().startswith("int8")
    with pytest.warns(UserWarning, match="matches no quantizer"):
        assert mtq.set_quantizer_attribute(model, "w.two", {"num_bits": 4}) == 0


def test_unregistered_alias_is_gone(model: nn.Sequential) -> None:
    QUANTIZER_ALIASES.unregister(type(model[1]))
    assert type(model[1]) not in QUANTIZER_ALIASES
    with pytest.warns(UserWarning, match="matches no quantizer"):
        assert mtq.disable_quantizer(model, "w.one") == 0


def test_registry_rejects_bad_registrations() -> None:
    reg = QuantizerAliasRegistry()
    with pytest.raises(TypeError, match=r"layer_cls: expected an nn\.Module subclass"):
        reg.register(int)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn: expected a callable"):
        reg.register(nn.Linear)("not a function")  # type: ignore[arg-type]
    assert nn.Linear not in reg
    assert reg.aliases("x.weight_quantizer", nn.Linear(2, 2)) == ()
