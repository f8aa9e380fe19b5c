"""Framework-independent helpers (logging, atomic file writes, text corpora)."""
