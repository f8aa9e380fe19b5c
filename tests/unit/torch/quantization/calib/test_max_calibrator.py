import pytest
import torch

from modeloptim.torch.quantization.calib import MaxCalibrator


def test_running_max_per_tensor_channel_block():
    batches = [torch.randn(6, 40) * s for s in (1.0, 3.0, 0.5)]
    full = torch.stack(batches)
    c = MaxCalibrator(8)
    cc = MaxCalibrator(8, axis=0)
    cb = MaxCalibrator(4, block_sizes={-1: 16})  # 40 -> padded to 48, 3 blocks per row
    for b in batches:
        c.collect(b)
        cc.collect(b)
        cb.collect(b)
    assert torch.equal(c.compute_amax(), full.abs().max())
    assert torch.equal(cc.compute_amax(), full.abs().amax(dim=(0, 2)).reshape(6, 1))
    ref = torch.stack(
        [full[:, :, i : i + 16].abs().amax(dim=(0, 2)) for i in range(0, 40, 16)], dim=1
    )
    assert torch.equal(cb.compute_amax(), ref.reshape(-1, 1))
    c.reset()
    assert c.compute_amax() is None


def test_bad_inputs():
    c = MaxCalibrator(8)
    with pytest.raises(ValueError, match=r"MaxCalibrator\.collect: input x contains NaN"):
        c.collect(torch.tensor([1.0, float("inf")]))
    with pytest.raises(TypeError, match="x: expected a float"):
        c.collect(torch.tensor([1, 2]))
    cc = MaxCalibrator(8, axis=0)
    cc.collect(torch.randn(3, 4))
    with pytest.raises(ValueError, match="amax shape"):
        cc.collect(torch.randn(5, 4))
    with pytest.raises(ValueError, match="method"):
        cc.compute_amax("entropy")
