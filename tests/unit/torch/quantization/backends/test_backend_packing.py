"""Nibble packing layout and E2M1 codes."""

import pytest
import torch

from modeloptim.torch.quantization.backends import packing
from modeloptim.torch.quantization.triton import reference as ref


def test_even_index_goes_to_low_nibble():
    q = torch.tensor([[1, -2, 7, -8]], dtype=torch.int8)
    packed = packing.pack_int4(q)
    # byte0 = 1 | (0xE << 4) = 0xE1, byte1 = 7 | (0x8 << 4) = 0x87
    assert packed.tolist() == [[0xE1, 0x87]]
    assert packed.dtype == torch.uint8


def test_int4_roundtrip_random():
    q = torch.randint(-8, 8, (5, 64), dtype=torch.int8)
    assert torch.equal(packing.unpack_int4(packing.pack_int4(q)), q)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="even"):
        packing.pack_nibbles(torch.zeros(3, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        packing.pack_int4(torch.tensor([9, 0]))
    with pytest.raises(ValueError, match="E2M1 grid"):
        packing.e2m1_encode(torch.tensor([0.7]))


def test_e2m1_codes_roundtrip_and_known_codes():
    vals = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.5, -6.0])
    codes = packing.e2m1_encode(vals)
    assert codes.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9, 15]
    assert torch.equal(packing.e2m1_decode(codes), vals)


def test_e2m1_round_matches_reference_grid():
    x = torch.linspace(-8, 8, 2001)
    assert torch.equal(packing.e2m1_round(x), ref.round_to_grid(x, "e2m1"))


def test_interleaved_words_layout_and_round_trip():
    from modeloptim.torch.quantization.backends.packing import (
        deinterleave_int4_words,
        interleave_int4_words,
        unpack_nibbles,
    )

    torch.manual_seed(0)
    packed = torch.randint(0, 256, (3, 192), dtype=torch.uint8)  # K = 384: 3 blocks
    words = interleave_int4_words(packed)
    assert words.dtype == torch.int32
    assert words.shape == (3, 48)
    assert torch.equal(deinterleave_int4_words(words), packed)
    codes = unpack_nibbles(packed)
    w = words.to(torch.int64) & 0xFFFFFFFF
    # the documented placement, element by element
    for b in range(3):
        for j in range(16):
            for s in range(4):
                for h in range(2):
                    e = 128 * b + 2 * (16 * s + j) + h
                    got = (w[:, 16 * b + j] >> (4 * s + 16 * h)) & 15
                    assert torch.equal(got, codes[:, e].to(torch.int64))
    with pytest.raises(ValueError, match="multiple of 128"):
        interleave_int4_words(torch.zeros(2, 32, dtype=torch.uint8))
