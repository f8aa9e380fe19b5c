import pytest
import torch

from modeloptim.torch.quantization.qtensor import pack_nibbles, unpack_nibbles


def test_even_index_in_low_nibble():
    packed = pack_nibbles(torch.tensor([[1, 2, 3, 4, 5]], dtype=torch.uint8))
    # bytes: 0x21, 0x43, 0x05 (odd length padded with a zero code)
    assert packed.tolist() == [[0x21, 0x43, 0x05]]


def test_signed_roundtrip_all_codes():
    codes = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 1)
    packed = pack_nibbles(codes)
    assert packed.shape == (3, 8)
    assert packed[0, 0].item() == (0x8 | (0x9 << 4))  # -8 -> 0x8, -7 -> 0x9
    assert torch.equal(unpack_nibbles(packed, 16, signed=True), codes)


def test_bad_input():
    with pytest.raises(TypeError, match="codes"):
        pack_nibbles(torch.zeros(4))
    with pytest.raises(ValueError, match="n:"):
        unpack_nibbles(torch.zeros(2, dtype=torch.uint8), 5, signed=False)
