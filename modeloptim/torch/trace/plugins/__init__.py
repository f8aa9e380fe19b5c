"""Optional integrations (imported only when their library is already loaded)."""
