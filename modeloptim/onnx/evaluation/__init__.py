"""Evaluation helpers on real models that ship inside installed packages (OCR, magika, MiniLM).

Used by the tests and ``benchmarks/onnx_*.py``; each helper imports its package lazily.
"""
