"""Integrations with third-party libraries, imported only when that library is in use.

:func:`modeloptim.torch.quantization.conversion.register_plugins` imports a plugin when its
library is already in ``sys.modules``; nothing here is imported by ``import modeloptim``.
"""
