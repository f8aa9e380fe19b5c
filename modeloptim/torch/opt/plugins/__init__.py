"""Optional integrations of the mode/state machinery (imported only on request)."""
