"""``python -m modeloptim.onnx.quantization``."""

import sys

from modeloptim.onnx.quantization.cli import main

sys.exit(main())
