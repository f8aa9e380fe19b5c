import subprocess
import sys

import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.config import QuantizerAttributeConfig
from modeloptim.torch.quantization.nn import SequentialQuantizer, TensorQuantizer


def test_names_users_import():
    assert mtq.TensorQuantizer is TensorQuantizer
    assert mtq.SequentialQuantizer is SequentialQuantizer
    assert mtq.QuantizerAttributeConfig is QuantizerAttributeConfig
    for name in ("MaxCalibrator", "HistogramCalibrator", "QuantFormat", "resolve_format"):
        assert name in mtq.__all__
        assert hasattr(mtq, name)


def test_quantization_import_does_not_pull_optional_deps():
    code = (
        "import sys, torch\n"
        "import modeloptim.torch.quantization as mtq\n"
        "q = mtq.TensorQuantizer({'num_bits': 'nvfp4'}, amax=1.0)\n"
        "q(torch.randn(2, 16))\n"
        "bad = [m for m in ('transformers', 'onnx', 'triton') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
