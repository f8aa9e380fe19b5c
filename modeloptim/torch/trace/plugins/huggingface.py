"""transformers support for tracing (imported only when transformers is loaded)."""

from __future__ import annotations
