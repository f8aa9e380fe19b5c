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


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [({}, (4, 40)), ({"axis": 0}, (4, 40)), ({"block_sizes": {-1: 16}}, (4, 40))],
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_anywhere_is_found_from_the_reduced_amax(kwargs, shape, bad):
    # One bad value in the last channel/block: the reduction must carry it to the amax.
    c = MaxCalibrator(8, **kwargs)
    good = torch.randn(shape)
    c.collect(good)
    before = c.compute_amax().clone()
    x = torch.randn(shape)
    x[-1, -1] = bad
    with pytest.raises(ValueError, match=r"MaxCalibrator\.collect: input x contains NaN or Inf"):
        c.collect(x)
    assert torch.equal(c.compute_amax(), before)  # the failed batch changed nothing


def test_float64_beyond_float32_range_names_the_range():
    c = MaxCalibrator(8)
    with pytest.raises(ValueError, match="beyond the float32 range"):
        c.collect(torch.tensor([1.0, 1e300], dtype=torch.float64))
    assert c.compute_amax() is None


def test_finite_input_is_not_scanned_elementwise(monkeypatch):
    # The finiteness check runs on the reduced amax, not on every element of x.
    seen: list[int] = []
    real = torch.isfinite

    def spy(t):
        seen.append(t.numel())
        return real(t)

    monkeypatch.setattr(torch, "isfinite", spy)
    x = torch.randn(64, 256)
    c = MaxCalibrator(8, axis=0)
    c.collect(x)
    assert seen
    assert max(seen) <= 64
    torch.testing.assert_close(c.compute_amax(), x.abs().amax(dim=1, keepdim=True), rtol=0, atol=0)
