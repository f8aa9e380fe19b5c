"""PyTorch model optimization: quantization, tracing, modes, pruning, export."""
