import pytest
import torch
from fq_refs import block_slices

from modeloptim.torch.quantization.formats import Blocked, PerChannel, PerTensor


@pytest.mark.parametrize(
    ("shape", "blocks"),
    [
        ((4, 64), {-1: 16}),
        ((3, 70), {-1: 32}),
        ((130, 260), {-1: 128, -2: 128}),
        ((2, 9, 6), {1: 4, 2: 3}),
        ((5, 7), {0: 2}),
    ],
)
def test_blocked_view_roundtrip_and_block_contents(shape, blocks):
    x = torch.randn(shape)
    g = Blocked(blocks)
    view, restore = g.to_view(x)
    assert view.shape == (g.num_blocks(shape), g.block_numel)
    assert torch.equal(restore(view), x)
    # each block of the view holds exactly the elements of one slicing-reference block
    # (padding zeros aside), in row-major block order
    ref_blocks = [x[sl].reshape(-1) for sl in block_slices(shape, blocks)]
    assert len(ref_blocks) == view.shape[0]
    for row, ref in zip(view, ref_blocks, strict=True):
        got = row[row != 0] if ref.numel() < row.numel() else row
        assert torch.equal(
            torch.sort(got).values,
            torch.sort(ref[ref != 0] if ref.numel() < row.numel() else ref).values,
        )
    amax = g.reduce_amax(view)
    assert torch.equal(amax.reshape(-1), torch.stack([b.abs().max() for b in ref_blocks]))


def test_reduce_sum_matches_amax_shape():
    x = torch.randn(6, 10)
    pc = PerChannel(0)
    amax = pc.reduce_amax(x)
    assert torch.allclose(pc.reduce_sum(x, amax), x.sum(1, keepdim=True))
    assert torch.allclose(PerTensor().reduce_sum(x, torch.tensor(1.0)), x.sum())
    b = Blocked({-1: 5})
    v, _ = b.to_view(x)
    assert torch.allclose(b.reduce_sum(v, b.reduce_amax(v)), x.reshape(-1, 5).sum(1, keepdim=True))


def test_bad_granularity_arguments():
    with pytest.raises(ValueError, match="axis"):
        PerChannel(())
    with pytest.raises(ValueError, match="block_sizes"):
        Blocked({})
    with pytest.raises(ValueError, match="block_sizes: dim 2 is out of range"):
        Blocked({2: 4}).to_view(torch.ones(3, 4))
    with pytest.raises(ValueError, match="given twice"):
        Blocked({1: 4, -1: 2}).to_view(torch.ones(3, 4))
    with pytest.raises(ValueError, match="repeated"):
        PerChannel((0, -2)).reduce_amax(torch.ones(3, 4))
