"""``python -m modeloptim.onnx.autocast``."""

import sys

from modeloptim.onnx.autocast.cli import main

sys.exit(main())
