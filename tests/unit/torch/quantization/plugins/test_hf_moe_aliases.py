"""ModelOpt's quantizer names for 3-D MoE experts (``<experts>.<proj>_weight_quantizers.<e>``).

Every expert quantizer of ``plugins/hf_moe`` also answers to ModelOpt's name, so patterns
written for ModelOpt reach the same quantizers: checked by listing which quantizers a
pattern changed against the set expected from the module structure, by quantizing with
ModelOpt-named and own-named configs (bit-equal models), and by checking that no stock preset
behaves differently with the aliases than without them.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import modeloptim.torch.opt as mto
import modeloptim.torch.quantization as mtq

from ._hf_moe import experts_of, family_model, lm_loop, one_thread, qwen2_moe, token_batches

transformers = pytest.importorskip("transformers")

from modeloptim.torch.export import export_hf_checkpoint, load_hf_checkpoint  # noqa: E402
from modeloptim.torch.quantization.config.quantize import QuantizerCfgEntry  # noqa: E402
from modeloptim.torch.quantization.conversion import (  # noqa: E402
    named_quantizers,
    replace_quant_module,
    set_quantizer_by_cfg,
)
from modeloptim.torch.quantization.mode import quantizer_state  # noqa: E402
from modeloptim.torch.quantization.plugins.hf_moe import (  # noqa: E402
    QuantHFExpertProjection,
    modelopt_expert_alias,
)
from modeloptim.torch.quantization.quantizer_aliases import QUANTIZER_ALIASES  # noqa: E402

__all__ = ["one_thread"]  # the autouse fixture

E = 4  # experts per layer in every model below
IDS = token_batches(2, 12, seed=5, vocab=64)
W8 = {"num_bits": 8, "axis": 0}
FP8 = {"num_bits": (4, 3), "axis": None}


def _converted(family: str = "qwen2_moe") -> nn.Module:
    model = qwen2_moe(num_experts=E) if family == "qwen2_moe" else family_model(family)
    replace_quant_module(model)
    return model


def _experts_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if m in experts_of(model)]


def _expected_aliases(model: nn.Module) -> dict[str, str]:
    """Own name -> ModelOpt name, written out from ModelOpt's layout (independent of the code)."""
    out: dict[str, str] = {}
    for ex in _experts_names(model):
        first = (
            "gate_up_proj"
            if "gate_up_proj" in dict(model.get_submodule(ex).named_parameters(recurse=False))
            else "up_proj"
        )
        for e in range(E):
            for proj in (first, "down_proj"):
                out[f"{ex}.{e}.{proj}.weight_quantizer"] = f"{ex}.{proj}_weight_quantizers.{e}"
                out[f"{ex}.{e}.{proj}.input_quantizer"] = f"{ex}.{proj}_input_quantizer"
    return out


def _entries(quant_cfg: list[dict[str, Any]]) -> list[QuantizerCfgEntry]:
    return mtq.QuantizeConfig.parse({"quant_cfg": quant_cfg}).quant_cfg


def _states(model: nn.Module) -> dict[str, tuple[bool, str]]:
    """``name -> (enabled, format)`` for every quantizer attribute."""
    return {
        n: (q.is_enabled, q.format.describe() if isinstance(q, mtq.TensorQuantizer) else "seq")
        for n, q, _ in named_quantizers(model)
    }


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    assert before.keys() == after.keys()
    return {n for n in before if before[n] != after[n]}


@pytest.fixture
def no_aliases() -> Iterator[None]:
    """Run with the MoE alias function unregistered (the plain-name behaviour)."""
    QUANTIZER_ALIASES.unregister(QuantHFExpertProjection)
    try:
        yield
    finally:
        QUANTIZER_ALIASES.register(QuantHFExpertProjection)(modelopt_expert_alias)


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral", "gpt_oss"])
def test_every_expert_quantizer_has_exactly_modelopts_name(family: str) -> None:
    model = _converted(family)
    expected = _expected_aliases(model)
    got = {}
    for name, _, layer in named_quantizers(model):
        aliases = QUANTIZER_ALIASES.aliases(name, layer)
        if aliases:
            assert len(aliases) == 1
            got[name] = aliases[0].name
            # ModelOpt's quantizers live on the experts module (parent_class refers to it)
            assert aliases[0].parent is model.get_submodule(name.rsplit(".", 3)[0])
    assert got == expected
    layers = len(_experts_names(model))
    assert layers == (2 if family == "qwen2_moe" else 1)
    assert len(got) == layers * E * 2 * 2  # (first, down) x (weight, input) per expert


def test_modelopt_weight_pattern_disables_exactly_the_gate_up_weights() -> None:
    model = _converted()
    before = _states(model)
    assert mtq.disable_quantizer(model, "*experts.gate_up_proj_weight_quantizers*") == 2 * E
    expected = {
        f"{ex}.{e}.gate_up_proj.weight_quantizer" for ex in _experts_names(model) for e in range(E)
    }
    assert _changed(before, _states(model)) == expected
    # one expert of one layer, by its ModelOpt index
    before = _states(model)
    assert (
        mtq.disable_quantizer(model, "model.layers.1.mlp.experts.down_proj_weight_quantizers.2")
        == 1
    )
    assert _changed(before, _states(model)) == {
        "model.layers.1.mlp.experts.2.down_proj.weight_quantizer"
    }
    # and enabled again through the same name
    assert mtq.enable_quantizer(model, "*experts.gate_up_proj_weight_quantizers.3") == 2
    assert all(
        model.get_submodule(f"{ex}.3.gate_up_proj").weight_quantizer.is_enabled
        for ex in _experts_names(model)
    )


def test_shared_input_name_sets_every_experts_input_quantizer_only() -> None:
    model = _converted()
    before = _states(model)
    hits = mtq.set_quantizer_attribute(model, "*gate_up_proj_input_quantizer", FP8)
    assert hits == 2 * E
    expected = {
        f"{ex}.{e}.gate_up_proj.input_quantizer" for ex in _experts_names(model) for e in range(E)
    }
    assert _changed(before, _states(model)) == expected  # not the shared expert's gate/up
    for name in expected:
        q = model.get_submodule(name)
        assert q.is_enabled
        assert q.format.describe() == mtq.TensorQuantizer(FP8).format.describe()


def test_predicate_sees_aliases_too() -> None:
    model = _converted()
    before = _states(model)
    assert (
        mtq.disable_quantizer(model, lambda n: n.endswith("experts.down_proj_input_quantizer"))
        == 2 * E
    )
    expected = {
        f"{ex}.{e}.down_proj.input_quantizer" for ex in _experts_names(model) for e in range(E)
    }
    assert _changed(before, _states(model)) == expected


def test_parent_class_of_an_alias_is_the_experts_module() -> None:
    model = _converted()
    before = _states(model)
    cfg = _entries(
        [{"quantizer_name": "*input_quantizer", "parent_class": "Qwen2MoeExperts", "enable": False}]
    )
    assert set_quantizer_by_cfg(model, cfg) == {"*input_quantizer": 4 * E}
    expected = {
        f"{ex}.{e}.{p}.input_quantizer"
        for ex in _experts_names(model)
        for e in range(E)
        for p in ("gate_up_proj", "down_proj")
    }
    assert _changed(before, _states(model)) == expected
    # own names keep their own parent class; an alias-only pattern under it matches nothing
    own = _entries(
        [
            {
                "quantizer_name": "*experts.0.down_proj.weight_quantizer",
                "parent_class": "HFExpertProjection",
                "cfg": W8,
            }
        ]
    )
    assert set_quantizer_by_cfg(model, own) == {"*experts.0.down_proj.weight_quantizer": 2}
    alias_wrong_class = _entries(
        [
            {
                "quantizer_name": "*down_proj_weight_quantizers*",
                "parent_class": "HFExpertProjection",
                "cfg": W8,
            }
        ]
    )
    with pytest.warns(UserWarning, match="matches no quantizer"):
        assert set_quantizer_by_cfg(model, alias_wrong_class) == {
            "*down_proj_weight_quantizers*": 0
        }


def test_alias_patterns_do_not_warn_and_unknown_ones_still_do() -> None:
    model = _converted()
    cfg = _entries(
        [
            {"quantizer_name": "*experts.gate_up_proj_weight_quantizers*", "cfg": W8},
            {"quantizer_name": "*experts.down_proj_input_quantizer", "cfg": FP8},
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = set_quantizer_by_cfg(model, cfg)
        assert mtq.set_quantizer_attribute(model, "*down_proj_weight_quantizers.0", W8) == 2
        assert mtq.enable_quantizer(model, "*experts.gate_up_proj_input_quantizer") == 2 * E
        assert mtq.disable_quantizer(model, "*experts.down_proj_weight_quantizers.3") == 2
    assert counts == {
        "*experts.gate_up_proj_weight_quantizers*": 2 * E,
        "*experts.down_proj_input_quantizer": 2 * E,
    }
    bad = _entries([{"quantizer_name": "*experts.up_gate_weight_quantizers*", "cfg": W8}])
    with pytest.warns(UserWarning, match="up_gate_weight_quantizers"):
        set_quantizer_by_cfg(model, bad)
    with pytest.warns(UserWarning, match="matches no quantizer"):
        assert mtq.set_quantizer_attribute(model, "*experts.gate_up_proj_output_quantizer", W8) == 0
    with pytest.warns(UserWarning, match="matches no quantizer"):
        assert mtq.disable_quantizer(model, "*experts.gate_up_proj_weight_quantizers.9") == 0


def test_alias_patterns_match_nothing_without_the_registered_function(no_aliases: None) -> None:
    # the mechanism is the registry entry: without it ModelOpt names are unknown, as before
    model = _converted()
    with pytest.warns(UserWarning, match="matches no quantizer"):
        assert mtq.disable_quantizer(model, "*experts.gate_up_proj_weight_quantizers*") == 0


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral", "gpt_oss"])
def test_stock_presets_apply_identically_with_and_without_aliases(family: str) -> None:
    # aliases only add ModelOpt's names: no stock preset may reach a different quantizer set
    results = []
    for with_aliases in (True, False):
        states = []
        for preset in mtq.PRESETS.values():
            model = _converted(family)
            if not with_aliases:
                QUANTIZER_ALIASES.unregister(QuantHFExpertProjection)
            try:
                set_quantizer_by_cfg(
                    model,
                    mtq.QuantizeConfig.parse(copy.deepcopy(preset)).quant_cfg,
                    warn_unmatched=False,
                )
            finally:
                QUANTIZER_ALIASES.register(QuantHFExpertProjection)(modelopt_expert_alias)
            states.append(quantizer_state(model))
        results.append(states)
    assert results[0] == results[1]
    assert len({repr(s) for s in results[0]}) > 5  # the presets do configure different things


OURS = [
    {"quantizer_name": "*weight_quantizer", "cfg": W8},
    {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    {
        "quantizer_name": "*experts.*.gate_up_proj.weight_quantizer",
        "cfg": {"num_bits": 4, "block_sizes": {-1: 16}},
    },
    {"quantizer_name": "*experts.*.down_proj.input_quantizer", "cfg": FP8},
    {"quantizer_name": "*experts.1.down_proj.weight_quantizer", "enable": False},
    {"quantizer_name": "*lm_head*", "enable": False},
]
MODELOPT = [
    {"quantizer_name": "*weight_quantizer", "cfg": W8},
    {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    {
        "quantizer_name": "*experts.gate_up_proj_weight_quantizers.*",
        "cfg": {"num_bits": 4, "block_sizes": {-1: 16}},
    },
    {"quantizer_name": "*experts.down_proj_input_quantizer", "cfg": FP8},
    {"quantizer_name": "*experts.down_proj_weight_quantizers.1", "enable": False},
    {"quantizer_name": "*lm_head*", "enable": False},
]


def _quantize(family: str, rules: list[dict[str, Any]]) -> nn.Module:
    model = qwen2_moe(num_experts=E) if family == "qwen2_moe" else family_model(family)
    return mtq.quantize(
        model, {"quant_cfg": copy.deepcopy(rules), "algorithm": "max"}, lm_loop(IDS)
    )


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS[1]).logits


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral"])
def test_modelopt_named_config_quantizes_bit_equal_to_own_names(
    tmp_path: Path, family: str
) -> None:
    ours, theirs = _quantize(family, OURS), _quantize(family, MODELOPT)
    assert quantizer_state(theirs) == quantizer_state(ours)
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert sd_ours.keys() == sd_theirs.keys()
    assert all(torch.equal(sd_ours[k], sd_theirs[k]) for k in sd_ours)  # amax included
    assert torch.equal(_logits(theirs), _logits(ours))
    # the expert rules did something: without them (plain W8A8) the logits differ
    plain = _quantize(family, [OURS[0], OURS[1], OURS[-1]])
    assert not torch.equal(_logits(plain), _logits(ours))
    ex = experts_of(theirs)[0]
    assert not ex.expert(1).down_proj.weight_quantizer.is_enabled
    assert ex.expert(0).down_proj.weight_quantizer.is_enabled
    assert ex.expert(2).gate_up_proj.weight_quantizer.format.describe().startswith("int4")
    # save/restore and export/reload are unchanged (aliases are names only, no new state)
    mto.save(theirs, tmp_path / "m.pt")
    fresh = qwen2_moe(num_experts=E, seed=7) if family == "qwen2_moe" else family_model(family, 7)
    mto.restore(fresh, tmp_path / "m.pt")
    assert torch.equal(_logits(fresh), _logits(ours))
    layers = len(_experts_names(fresh))
    assert mtq.disable_quantizer(fresh, "*experts.down_proj_input_quantizer") == layers * E


def test_export_and_reload_of_a_modelopt_named_config_equal_own_names(tmp_path: Path) -> None:
    # FP8 everywhere except the experts of layer 1 (written in float), named both ways
    def rules(weights: str, inputs: str) -> dict[str, Any]:
        return {
            "quant_cfg": [
                {"quantizer_name": "*weight_quantizer", "cfg": FP8},
                {"quantizer_name": "*input_quantizer", "cfg": FP8},
                {"quantizer_name": weights, "enable": False},
                {"quantizer_name": inputs, "enable": False},
                {"quantizer_name": "*lm_head*", "enable": False},
            ],
            "algorithm": "max",
        }

    theirs = rules(
        "*layers.1.mlp.experts.*_weight_quantizers.*", "*layers.1.mlp.experts.*_input_quantizer"
    )
    ours = rules(
        "*layers.1.mlp.experts.*.weight_quantizer", "*layers.1.mlp.experts.*.input_quantizer"
    )
    models = [mtq.quantize(qwen2_moe(num_experts=E), r, lm_loop(IDS)) for r in (theirs, ours)]
    assert not experts_of(models[0])[1].expert(2).down_proj.input_quantizer.is_enabled
    assert experts_of(models[0])[0].expert(2).down_proj.input_quantizer.is_enabled
    tensors = []
    for i, m in enumerate(models):
        export_hf_checkpoint(m, tmp_path / str(i))
        loaded = load_hf_checkpoint(tmp_path / str(i))
        torch.testing.assert_close(_logits(loaded), _logits(m), rtol=0, atol=0)
        tensors.append(loaded.state_dict())
    assert tensors[0].keys() == tensors[1].keys()
    for k, v in tensors[0].items():  # packed weights, scales and quantizer extra state
        assert torch.equal(v, tensors[1][k]) if isinstance(v, torch.Tensor) else v == tensors[1][k]
    files = [sorted(p.name for p in (tmp_path / str(i)).iterdir()) for i in (0, 1)]
    assert files[0] == files[1]
    for f in files[0]:
        assert (tmp_path / "0" / f).read_bytes() == (tmp_path / "1" / f).read_bytes(), f


def test_postprocess_amax_takes_an_alias_key() -> None:
    model = _quantize("qwen2_moe", OURS)
    ex = experts_of(model)
    old = {e: ex[0].expert(e).gate_up_proj.weight_quantizer.amax.clone() for e in range(E)}
    other = ex[0].expert(0).down_proj.weight_quantizer.amax.clone()
    assert (
        mtq.postprocess_amax(
            model, "*layers.0.mlp.experts.gate_up_proj_weight_quantizers.*", lambda a: a * 0.5
        )
        == E
    )
    for e in range(E):
        assert torch.equal(ex[0].expert(e).gate_up_proj.weight_quantizer.amax, old[e] * 0.5)
    assert torch.equal(ex[0].expert(0).down_proj.weight_quantizer.amax, other)


def test_summary_lists_modelopt_names(capsys: pytest.CaptureFixture[str]) -> None:
    model = _quantize("mixtral", OURS)
    rows = mtq.print_quant_summary(model)
    expected = _expected_aliases(model)
    got = {f"{r['module']}.{r['quantizer']}": r["alias"] for r in rows}
    assert {k: v for k, v in got.items() if v is not None} == expected
    assert got["lm_head.weight_quantizer"] is None
    assert "alias" in capsys.readouterr().out  # the column (rich wraps its long names)


def test_dict_form_config_with_modelopt_names() -> None:
    # the older {pattern: attributes} form, weight-only (no calibration data needed)
    theirs = {
        "*weight_quantizer": W8,
        "*input_quantizer": {"enable": False},
        "*experts.gate_up_proj_weight_quantizers.*": {"num_bits": 4, "block_sizes": {-1: 16}},
        "*experts.down_proj_weight_quantizers.1": {"enable": False},
    }
    ours = {
        "*weight_quantizer": W8,
        "*input_quantizer": {"enable": False},
        "*experts.*.gate_up_proj.weight_quantizer": {"num_bits": 4, "block_sizes": {-1: 16}},
        "*experts.1.down_proj.weight_quantizer": {"enable": False},
    }
    models = [
        mtq.quantize(qwen2_moe(num_experts=E), {"quant_cfg": c, "algorithm": "max"})
        for c in (theirs, ours)
    ]
    assert quantizer_state(models[0]) == quantizer_state(models[1])
    assert torch.equal(_logits(models[0]), _logits(models[1]))
    ex = experts_of(models[0])[1]
    assert ex.expert(3).gate_up_proj.weight_quantizer.format.describe().startswith("int4")
    assert ex.expert(3).down_proj.weight_quantizer.format.describe().startswith("int8")
    assert not ex.expert(1).down_proj.weight_quantizer.is_enabled
