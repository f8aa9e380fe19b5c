import pytest
import torch
from torch import nn

from modeloptim.torch.quantization.formats import FP8Format, IntegerFormat, resolve_format
from modeloptim.torch.quantization.nn import SequentialQuantizer, TensorQuantizer


def test_w4a8_style_chain_applies_in_order():
    w = torch.randn(8, 256)
    sq = SequentialQuantizer(TensorQuantizer(), TensorQuantizer())
    sq.set_from_attribute_config(
        [
            {"num_bits": 4, "block_sizes": {-1: 128, "type": "dynamic"}},
            {"num_bits": (4, 3), "axis": None},
        ]
    )
    sq[1].amax = 3.0
    int4 = resolve_format({"num_bits": 4, "block_sizes": {-1: 128, "type": "dynamic"}})
    assert isinstance(int4, IntegerFormat)
    expected = FP8Format(4).fake_quant(int4.fake_quant(w), torch.tensor(3.0))
    assert torch.equal(sq(w), expected)
    assert sq.is_enabled


def test_only_first_and_convert_to_single_quantizer():
    w = torch.randn(4, 128)
    a = TensorQuantizer({"num_bits": 4, "block_sizes": {-1: 128, "type": "dynamic"}})
    b = TensorQuantizer({"num_bits": 8}, amax=0.01)
    sq = SequentialQuantizer(a, b)
    with sq.only_first() as first:
        assert first is a
        assert not b.is_enabled
        assert torch.equal(sq(w), a(w))
    assert b.is_enabled

    model = nn.Module()
    model.weight_quantizer = sq
    with SequentialQuantizer.convert_to_single_quantizer(model):
        assert model.weight_quantizer is a
    assert model.weight_quantizer is sq


def test_bad_arguments():
    with pytest.raises(ValueError, match="quantizers"):
        SequentialQuantizer()
    with pytest.raises(TypeError, match=r"quantizers\[1\]"):
        SequentialQuantizer(TensorQuantizer(), nn.Identity())  # type: ignore[arg-type]
    sq = SequentialQuantizer(TensorQuantizer(), TensorQuantizer())
    with pytest.raises(ValueError, match="attributes"):
        sq.set_from_attribute_config([{"num_bits": 8}])
    with pytest.raises(ValueError, match="attributes"):
        sq.set_from_attribute_config({"num_bits": 8})  # type: ignore[arg-type]
