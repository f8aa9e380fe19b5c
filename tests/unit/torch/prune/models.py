"""Small models for pruning tests (random weights, built in milliseconds)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResCNN(nn.Module):
    """Residual CNN: conv-bn stem, a residual pair sharing channels, a concat, a classifier."""

    def __init__(self, c: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.a = nn.Sequential(
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
            nn.Conv2d(2 * c, c, 3, padding=1),
            nn.BatchNorm2d(c),
        )
        self.b = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU())
        self.head = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(2 * c)
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.a(x))
        x = torch.cat([x, self.b(x)], 1)
        x = F.relu(self.bn(self.head(x)))
        return self.fc(x.mean((2, 3)))


class TinyTransformer(nn.Module):
    """Pre-norm block with nn.MultiheadAttention and a GELU MLP."""

    def __init__(self, d: int = 16, h: int = 4, f: int = 32) -> None:
        super().__init__()
        self.emb = nn.Linear(6, d)
        self.n1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, h, batch_first=True)
        self.n2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, f)
        self.fc2 = nn.Linear(f, d)
        self.out = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.emb(x)
        y = self.n1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.fc2(F.gelu(self.fc1(self.n2(x))))
        return self.out(x)


class GroupedNet(nn.Module):
    """Depthwise and grouped convs with GroupNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 12, 1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.g = nn.Conv2d(12, 8, 3, padding=1, groups=4)
        self.gn = nn.GroupNorm(4, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.dw(F.relu6(self.expand(x))))
        return self.fc(self.gn(self.g(x)).mean((2, 3)))


class Fixed(nn.Module):
    """A single Linear: input and output widths are fixed, nothing is searchable."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics so slicing mistakes change outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()
