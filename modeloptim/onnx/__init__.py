"""ONNX model optimization: post-training quantization and mixed-precision autocast."""
