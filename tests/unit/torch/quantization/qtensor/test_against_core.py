"""qtensor dequantize(quantize(x)) equals core's fake quant (TensorQuantizer) bit for bit."""

import pytest
import torch

from modeloptim.torch.export.packers import pack_weight
from modeloptim.torch.quantization.nn import TensorQuantizer

CASES = {
    "int8_per_channel": {"num_bits": 8, "axis": 0},
    "int8_per_tensor": {"num_bits": 8, "axis": None},
    "int4_block128_static": {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}},
    "int4_block32_dynamic": {"num_bits": 4, "block_sizes": {-1: 32, "type": "dynamic"}},
    "fp8_per_tensor": {"num_bits": (4, 3), "axis": None},
    "fp8_per_channel": {"num_bits": (4, 3), "axis": 0},
    "fp8_2d_block": {"num_bits": (4, 3), "block_sizes": {-1: 64, -2: 32, "type": "dynamic"}},
    "nvfp4": {
        "num_bits": (2, 1),
        "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)},
    },
    "mxfp8": {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    "mxfp4": {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("shape", [(48, 256), (20, 200)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_equals_core_fake_quant(name, shape, dtype):
    w = (torch.randn(shape) * torch.logspace(-3, 1, shape[1])).to(dtype)
    w[3, 7] = 0.0
    w[5] = 0.0  # an all-zero row / blocks
    q = TensorQuantizer(CASES[name])
    q.enable_calib()
    q(w)
    q.load_calib_amax(strict=False)
    q.disable_calib()
    q.enable_quant()
    fake = q(w)
    qt, rest = pack_weight(q, w)
    assert rest == []
    real = qt.dequantize()
    assert real.dtype == fake.dtype
    torch.testing.assert_close(real, fake, rtol=0, atol=0)
