"""Architecture search over elastic widths (``import modeloptim.torch.nas as mtn``).

``mtn.convert(model, mode=[("autonas", cfg)], dummy_input=x)`` turns the model into a search
space (each searchable channel group gets a list of width choices), ``mtn.search`` finds the
best subnet under a FLOPs/params budget with the user's score function, ``mtn.export`` makes it
a plain, physically smaller module.
"""

from modeloptim.torch.nas.api import choices, convert, export, search
from modeloptim.torch.prune.elastic import activate, deactivate

__all__ = ["activate", "choices", "convert", "deactivate", "export", "search"]
