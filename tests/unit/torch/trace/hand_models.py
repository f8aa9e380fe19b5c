"""Hand-written models covering the dependency patterns the analyzer must handle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + idt)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class DenseNetLike(nn.Module):
    """Each layer sees the concat of all previous feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.l1 = nn.Sequential(nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1))
        self.l2 = nn.Sequential(nn.BatchNorm2d(10), nn.ReLU(), nn.Conv2d(10, 4, 3, padding=1))
        self.trans = nn.Conv2d(14, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], 1)
        x = self.trans(x)
        return self.head(x.mean((2, 3)))


class InceptionLike(nn.Module):
    """Parallel branches of different widths concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(8, 6, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 2, 1))
        self.mix = nn.Conv2d(12, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x)], dim=1)
        y = F.relu(self.mix(y)) + x
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


class SEBlockNet(nn.Module):
    """Squeeze-and-excitation gate multiplies the feature map per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1 = nn.Conv2d(16, 4, 1)
        self.fc2 = nn.Conv2d(4, 16, 1)
        self.out = nn.Conv2d(16, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.out(x * s)


class GroupedConvNet(nn.Module):
    """MobileNet-style depthwise + grouped convs."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 12, 1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.gconv = nn.Conv2d(12, 8, 3, padding=1, groups=4)
        self.gn = nn.GroupNorm(4, 8)
        self.proj = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.dw(F.relu6(self.expand(x))))
        return self.proj(self.gn(self.gconv(x)))


class SwiGLUNet(nn.Module):
    """One Linear makes gate and up halves; chunk splits them."""

    def __init__(self, d: int = 16, h: int = 24) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.w12 = nn.Linear(d, 2 * h)
        self.w3 = nn.Linear(h, d)
        self.head = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(self.norm(x)).chunk(2, dim=-1)
        x = x + self.w3(F.silu(a) * b)
        return self.head(x)


class FlattenLinearNet(nn.Module):
    """Conv features flattened into a Linear: each channel is a block of H*W features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1, stride=2)
        self.fc1 = nn.Linear(5 * 4 * 4, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 1)
        x = F.relu(self.conv2(x))
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class SharedTiedNet(nn.Module):
    """A Linear applied twice, and an embedding tied to the output head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 12)
        self.shared = nn.Linear(12, 12)
        self.mid = nn.Linear(12, 7)
        self.back = nn.Linear(7, 12)
        self.lm_head = nn.Linear(12, 20, bias=False)
        self.lm_head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        h = h + self.shared(torch.relu(self.shared(h)))
        h = h + self.back(torch.relu(self.mid(h)))
        return self.lm_head(h)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent branch: fx cannot trace this
            return self.a(x)
        return self.b(x)


class ControlFlowNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.branch = DataDependent()
        self.mid = nn.Linear(8, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mid(self.branch(self.inp(x)))))


class HeadsAttention(nn.Module):
    """Hand-written attention reshaping hidden into (heads, head_dim) with -1."""

    def __init__(self, d: int = 16, head_dim: int = 4) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim**-0.5, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, -1)
        return self.o(y)


class TransformerNet(nn.Module):
    """Pre-norm blocks with nn.MultiheadAttention and a hand-written attention."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(6, d)
        self.ln1 = nn.LayerNorm(d)
        self.mha = nn.MultiheadAttention(d, 4, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.att = HeadsAttention(d)
        self.ff = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d))
        self.out = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        y = self.ln1(h)
        h = h + self.mha(y, y, y, need_weights=False)[0]
        h = h + self.att(self.ln2(h))
        h = h + self.ff(h)
        return self.out(h)


class NoSearchable(nn.Module):
    """Only consumer-free ops: nothing can be pruned."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class ConvTransposeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dec = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.inorm = nn.InstanceNorm2d(6, affine=True)
        self.out = nn.Conv1d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inorm(self.dec(F.relu(self.bn(self.enc(x)))))
        return self.out(y.flatten(2))


HAND_MODELS = {
    "resnet": (TinyResNet, lambda: torch.randn(2, 3, 16, 16)),
    "densenet": (DenseNetLike, lambda: torch.randn(2, 3, 8, 8)),
    "inception": (InceptionLike, lambda: torch.randn(2, 3, 8, 8)),
    "se": (SEBlockNet, lambda: torch.randn(2, 3, 8, 8)),
    "grouped": (GroupedConvNet, lambda: torch.randn(2, 3, 8, 8)),
    "swiglu": (SwiGLUNet, lambda: torch.randn(2, 5, 16)),
    "flatten_linear": (FlattenLinearNet, lambda: torch.randn(2, 1, 8, 8)),
    "shared_tied": (SharedTiedNet, lambda: torch.randint(0, 20, (2, 5))),
    "control_flow": (ControlFlowNet, lambda: torch.randn(3, 4)),
    "transformer": (TransformerNet, lambda: torch.randn(2, 5, 6)),
    "conv_transpose": (ConvTransposeNet, lambda: torch.randn(2, 3, 8, 8)),
}
