"""MaxCalibrator on CUDA: the NaN/Inf check runs at compute_amax (no host sync per batch)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

from modeloptim.torch.quantization.calib import MaxCalibrator  # noqa: E402


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_batch_raises_at_compute_amax(bad):
    c = MaxCalibrator(8, axis=0)
    c.collect(torch.randn(4, 8, device="cuda"))
    x = torch.randn(4, 8, device="cuda")
    x[2, 3] = bad
    c.collect(x)  # no error yet: checking here would synchronize with the device
    c.collect(torch.randn(4, 8, device="cuda"))
    with pytest.raises(ValueError, match="NaN or Inf"):
        c.compute_amax()


def test_finite_batches_match_the_cpu_amax():
    xs = [torch.randn(16, 32) * (i + 1) for i in range(3)]
    gpu, cpu = MaxCalibrator(8, axis=0), MaxCalibrator(8, axis=0)
    for x in xs:
        gpu.collect(x.cuda())
        cpu.collect(x)
    torch.testing.assert_close(gpu.compute_amax().cpu(), cpu.compute_amax(), rtol=0, atol=0)
