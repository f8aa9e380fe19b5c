"""Run the Triton kernels in Triton's CPU interpreter.

``triton.jit`` picks the interpreter when the kernel modules are imported, so the variable is
set here, before any test module of this folder imports them.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
