import pytest
import torch

from modeloptim.torch.quantization.config import QuantizerAttributeConfig
from modeloptim.torch.quantization.formats import (
    FORMAT_RULES,
    IntegerFormat,
    QuantizedCodes,
    resolve_format,
)


def test_registering_a_builder_extends_resolution_and_config(monkeypatch):
    # A new (num_bits, scale_bits) pair becomes valid by registering one builder.
    monkeypatch.setattr(FORMAT_RULES, "_rules", dict(FORMAT_RULES._rules))
    with pytest.raises(ValueError, match="num_bits"):
        QuantizerAttributeConfig(num_bits=(1, 2))

    @FORMAT_RULES.register((1, 2))
    def _build(spec):
        return IntegerFormat(3, granularity=spec.granularity())

    fmt = resolve_format(QuantizerAttributeConfig(num_bits=(1, 2), axis=0))
    assert fmt.name == "int3"
    assert fmt.granularity.describe() == "per-channel(axis=0)"


def test_unknown_combination_lists_supported_ones():
    with pytest.raises(ValueError, match=r"num_bits=\(4, 3\) with block_sizes scale_bits"):
        resolve_format({"num_bits": (4, 3), "block_sizes": {-1: 16, "scale_bits": (4, 3)}})


def test_quantized_codes_repr_is_compact():
    q = resolve_format({"num_bits": "nvfp4"}).quantize(torch.randn(4, 32), torch.tensor(3.0))
    assert isinstance(q, QuantizedCodes)
    r = repr(q)
    assert r.startswith("QuantizedCodes(nvfp4 block16, shape=(4, 32), codes=(8, 16) torch.uint8")
    assert "block_scale: (8, 1) torch.float8_e4m3fn" in r
    assert len(r) < 300
