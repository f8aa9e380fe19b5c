"""ONNX model optimization: post-training quantization and mixed-precision autocast.

* :func:`modeloptim.onnx.quantization.quantize` -- INT8 / FP8 Q/DQ and INT4 weight-only PTQ
  (CLI ``modeloptim onnx-quantize``, ``python -m modeloptim.onnx.quantization``).
* :func:`modeloptim.onnx.autocast.convert_to_mixed_precision` -- FP16 / BF16 conversion with
  measured fp32 fallbacks (CLI ``modeloptim onnx-autocast``).
* :func:`modeloptim.onnx.sanitize.sanitize` -- the graph clean-up both run first.

Importing this package does not import ``onnx`` or ``onnxruntime``; the submodules do.
"""
