"""Optimization modes and dynamic (converted in place) modules; import as ``mto``."""

from modeloptim.torch.opt.dynamic import DynamicModule, dynamic_class, swap_class

__all__ = ["DynamicModule", "dynamic_class", "swap_class"]
