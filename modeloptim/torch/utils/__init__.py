"""PyTorch-side helpers: default model loading, perplexity evaluation."""
