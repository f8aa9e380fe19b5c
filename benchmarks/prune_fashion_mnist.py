"""Fashion-MNIST CNN: ``mtp.prune(fastnas)`` to 50% FLOPs vs Torch-Pruning, same fine-tune budget.

Trains a small CNN, prunes a copy with modeloptim (magnitude ranking + score-driven search over
per-layer allocations, BatchNorm re-calibration) and another copy with Torch-Pruning
(``MagnitudePruner``, L1, uniform ratio raised step by step until the same FLOPs target is
met), fine-tunes both for the same number of epochs and prints test accuracy, FLOPs, params.

Data: Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
Torch-Pruning: ``pip install torch-pruning`` (benchmark only). CPU::

    python benchmarks/prune_fashion_mnist.py --epochs 3 --ft-epochs 1
"""

from __future__ import annotations

import argparse
import copy
import gzip
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import modeloptim.torch.prune as mtp
from modeloptim.torch.utils.profile import count_flops, count_params

DATA = Path("/usr/share/datasets/fashion-mnist")


def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 28, 28)`` normalized, labels ``(N,)``."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(DATA / f"{prefix}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(DATA / f"{prefix}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    xt = (torch.from_numpy(x.copy()).float() / 255 - 0.2860) / 0.3530
    return xt, torch.from_numpy(y.copy()).long()


class Net(nn.Module):
    """Conv-BN-ReLU x4 with a residual pair, pooling, flatten into a 2-layer classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32))
        self.c3 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.c4 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c1(x)
        x = F.max_pool2d(F.relu(x + self.c2(x)), 2)
        x = F.max_pool2d(self.c4(self.c3(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    bs: int = 128,
    seed: int = 0,
) -> None:
    """SGD + momentum with a cosine schedule."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * (len(x) // bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(len(x) // bs):
            idx = perm[i * bs : (i + 1) * bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = sum(
        int((model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum())
        for i in range(0, len(x), 1000)
    )
    return 100.0 * correct / len(x)


def prune_torch_pruning(model: nn.Module, example: torch.Tensor, target: float) -> nn.Module:
    """Torch-Pruning L1 magnitude pruner, uniform ratio raised until FLOPs <= target."""
    import torch_pruning as tp

    f0 = count_flops(model, example)
    for ratio in np.arange(0.05, 0.95, 0.01):
        m = copy.deepcopy(model)
        pruner = tp.pruner.MagnitudePruner(
            m,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=float(ratio),
            ignored_layers=[m.fc2],
        )
        pruner.step()
        if count_flops(m, example) <= target * f0:
            return m
    raise RuntimeError("torch-pruning could not reach the target")


def main() -> None:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--target", default="50%")
    ap.add_argument("--train-subset", type=int, default=60000)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    xtr, ytr = load("train")
    xte, yte = load("test")
    xtr, ytr = xtr[: args.train_subset], ytr[: args.train_subset]
    xval, yval = xtr[-5000:], ytr[-5000:]  # score_func data: part of train, never test
    example = xtr[:1]
    model = Net()
    t = time.time()
    train(model, xtr, ytr, args.epochs, 0.05)
    base_acc = accuracy(model, xte, yte)
    f0, p0 = count_flops(model, example), count_params(model)
    print(f"baseline: acc {base_acc:.2f}%  FLOPs {f0:,}  params {p0:,}  ({time.time() - t:.0f}s)")
    target = float(args.target.rstrip("%")) / 100

    t = time.time()
    calib = [xtr[i : i + 256] for i in range(0, 2048, 256)]
    ours, state = mtp.prune(
        copy.deepcopy(model),
        [("fastnas", {"channel_divisor": 4})],
        {"flops": args.target},
        example,
        {
            "score_func": lambda m: accuracy(m, xval[:2000], yval[:2000]),
            "data_loader": calib,
            "num_candidates": args.candidates,
        },
    )
    t_search = time.time() - t
    ours_oneshot = accuracy(ours, xte, yte)
    t = time.time()
    tp_model = prune_torch_pruning(model, example, target)
    t_tp = time.time() - t
    tp_oneshot = accuracy(tp_model, xte, yte)
    train(ours, xtr, ytr, args.ft_epochs, 0.01, seed=1)
    train(tp_model, xtr, ytr, args.ft_epochs, 0.01, seed=1)
    rows = [
        ("unpruned", base_acc, None, f0, p0, 0.0),
        (
            "modeloptim fastnas",
            accuracy(ours, xte, yte),
            ours_oneshot,
            count_flops(ours, example),
            count_params(ours),
            t_search,
        ),
        (
            "torch-pruning L1",
            accuracy(tp_model, xte, yte),
            tp_oneshot,
            count_flops(tp_model, example),
            count_params(tp_model),
            t_tp,
        ),
    ]
    print(f"\ntarget {args.target} FLOPs, fine-tune {args.ft_epochs} epoch(s) for both\n")
    print(
        f"{'model':<20} {'test acc':>9} {'one-shot':>9} {'FLOPs':>12} {'FLOPs %':>8} "
        f"{'params':>9} {'prune s':>8}"
    )
    for name, acc, one, fl, pa, sec in rows:
        one_s = f"{one:.2f}" if one is not None else "-"
        print(
            f"{name:<20} {acc:>9.2f} {one_s:>9} {fl:>12,} {100 * fl / f0:>7.1f}% "
            f"{pa:>9,} {sec:>8.1f}"
        )
    print(
        f"\nmodeloptim - unpruned: {rows[1][1] - base_acc:+.2f} points; "
        f"modeloptim - torch-pruning: {rows[1][1] - rows[2][1]:+.2f} points"
    )
    print("subnet:", state["best"]["subnet"])


if __name__ == "__main__":
    main()
