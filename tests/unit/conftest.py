"""CPU unit tests: Triton kernels always run in Triton's CPU interpreter here.

``triton.jit`` chooses the interpreter when a kernel module is imported, and any test (export,
compress, backends) may import the kernel modules first; so the variable is set once, for the
whole unit suite, before any test module is collected. GPU tests live in ``tests/gpu``.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
