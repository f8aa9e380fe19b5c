"""GPTQ column rules reproduce the core formats exactly (identity Hessian == RTN)."""

from __future__ import annotations

import pytest
import torch

from modeloptim.torch.quantization.algorithms.column_quant import column_quantizer_for
from modeloptim.torch.quantization.algorithms.gptq_solver import gptq_quantize
from modeloptim.torch.quantization.config import QuantizerAttributeConfig
from modeloptim.torch.quantization.formats import resolve_format

CASES = {
    "int4_block16": {"num_bits": 4, "block_sizes": {-1: 16}},
    "int4_block16_dynamic": {"num_bits": 4, "block_sizes": {-1: 16, "type": "dynamic"}},
    "int8_per_channel": {"num_bits": 8, "axis": 0},
    "int8_per_tensor": {"num_bits": 8},
    "fp8_per_tensor": {"num_bits": (4, 3)},
    "fp8_per_channel": {"num_bits": (4, 3), "axis": 0},
    "nvfp4": {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}},
}


@pytest.mark.parametrize("cols", [64, 40])  # 40: not a multiple of the block (padded)
@pytest.mark.parametrize("case", sorted(CASES))
def test_identity_hessian_equals_format_fake_quant(case, cols):
    fmt = resolve_format(QuantizerAttributeConfig(**CASES[case]))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, cols, generator=g) * torch.logspace(-2, 1, cols)
    amax = fmt.compute_amax(w)
    rule = column_quantizer_for(fmt, amax, w)
    got = gptq_quantize(w, torch.eye(cols), rule, block_size=32)
    torch.testing.assert_close(got, fmt.fake_quant(w, amax), rtol=0, atol=0)


def test_unsupported_layout_is_a_clear_error():
    fmt = resolve_format(QuantizerAttributeConfig(num_bits=8, axis=1))
    with pytest.raises(NotImplementedError, match="gptq: weight format"):
        column_quantizer_for(fmt, torch.ones(8), torch.randn(4, 8))
