import subprocess
import sys


def test_mtq_import_does_not_import_transformers():
    code = (
        "import sys, modeloptim.torch.quantization as mtq\n"
        "import torch\n"
        "mtq.quantize(torch.nn.Linear(4, 4), mtq.INT8_WEIGHT_ONLY_CFG)\n"
        "print('transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
