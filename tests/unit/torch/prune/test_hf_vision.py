"""transformers ResNet, MobileNetV2 and ViT (tiny, from configs): 50% FLOPs, run, round-trip."""

from __future__ import annotations

import copy

import pytest
import torch

import modeloptim.torch.opt as mto
import modeloptim.torch.prune as mtp
from modeloptim.torch.utils.profile import count_flops

transformers = pytest.importorskip("transformers")

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _resnet() -> torch.nn.Module:
    cfg = transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10
    )
    return transformers.ResNetForImageClassification(cfg)


def _mobilenet() -> torch.nn.Module:
    cfg = transformers.MobileNetV2Config(depth_multiplier=0.35, image_size=32, num_labels=10)
    return transformers.MobileNetV2ForImageClassification(cfg)


def _vit() -> torch.nn.Module:
    cfg = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=10,
    )
    return transformers.ViTForImageClassification(cfg)


def _logits(m: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return m(pixel_values=X).logits


@pytest.mark.parametrize("make", [_resnet, _mobilenet, _vit], ids=["resnet", "mobilenetv2", "vit"])
def test_half_flops_runs_and_round_trips(make, tmp_path) -> None:
    torch.manual_seed(0)
    model = make().eval()
    fresh = copy.deepcopy(model)
    f0 = count_flops(model, {"pixel_values": X})
    pruned, _ = mtp.prune(
        model, [("fastnas", {"channel_divisor": 1})], {"flops": "50%"}, {"pixel_values": X}
    )
    ratio = count_flops(pruned, {"pixel_values": X}) / f0
    assert 0.475 <= ratio <= 0.50, ratio  # within 5% of the target, never above it
    out = _logits(pruned)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    path = tmp_path / "pruned.pt"
    mto.save(pruned, path)
    restored = mto.restore(fresh, path)
    torch.testing.assert_close(_logits(restored), out, rtol=0, atol=0)
