import importlib.util
import pathlib

import pytest
import torch

transformers = pytest.importorskip("transformers")

from modeloptim.torch.opt import apply_mode, is_converted  # noqa: E402
from modeloptim.torch.opt.plugins.huggingface import (  # noqa: E402
    STATE_FILE,
    enable_huggingface_checkpointing,
)

HERE = pathlib.Path(__file__).parent.parent


def _toy():
    spec = importlib.util.spec_from_file_location("_toy_modes_hf", HERE / "_toy_modes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_llama():
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_save_pretrained_and_from_pretrained_carry_state(tmp_path):
    toy = _toy()
    enable_huggingface_checkpointing(registry=toy.TOY)
    model = apply_mode(_tiny_llama(), [("scale", {"init": 1.0})], registry=toy.TOY)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, toy.ScaledLinear):
                m.out_scale.uniform_(0.5, 1.5)
    ids = torch.randint(0, 96, (2, 9))
    ref = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / STATE_FILE).is_file()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert is_converted(loaded)
    assert torch.equal(loaded(input_ids=ids).logits, ref)
    # A plain (unconverted) model saves no state file and loads as usual.
    plain_dir = tmp_path / "plain"
    _tiny_llama().save_pretrained(plain_dir)
    assert not (plain_dir / STATE_FILE).exists()
    assert not is_converted(transformers.AutoModelForCausalLM.from_pretrained(plain_dir))
