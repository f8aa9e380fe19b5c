"""The `modeloptim` command line."""
