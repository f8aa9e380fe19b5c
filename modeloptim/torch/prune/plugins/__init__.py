"""Model-family plugins for pruning search spaces (imported only when their library is loaded)."""
