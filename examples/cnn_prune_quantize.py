"""Prune, then quantize, then deploy a CNN: Fashion-MNIST end to end, offline on CPU.

1. train a small residual CNN on Fashion-MNIST (Debian package ``dataset-fashion-mnist``);
2. ``mtp.prune`` (fastnas) to a FLOPs target, with a score-driven search over per-layer
   widths, then a short fine-tune;
3. ``mtq.quantize`` to INT8 (per-channel weights, per-tensor activations, max calibration);
4. ``mto.save`` / ``mto.restore`` into a fresh model (prune and quantize modes replay);
5. ONNX export with QuantizeLinear/DequantizeLinear, run in onnxruntime, compared with
   the PyTorch fake-quantized model.

Example::

    python examples/cnn_prune_quantize.py --train 20000 --epochs 2 --flops 50%
"""

from __future__ import annotations

import argparse
import copy
import gzip
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import modeloptim.torch.opt as mto
import modeloptim.torch.prune as mtp
import modeloptim.torch.quantization as mtq
from modeloptim.torch.quantization.export_onnx import export_onnx
from modeloptim.torch.utils.profile import count_flops

DATA = Path("/usr/share/datasets/fashion-mnist")


def load(split: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized images ``[N, 1, 28, 28]`` and labels ``[N]`` (first ``limit``)."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(DATA / f"{prefix}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:limit]
    with gzip.open(DATA / f"{prefix}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:limit]
    return (torch.from_numpy(x.copy()).float() / 255 - 0.286) / 0.353, torch.from_numpy(
        y.astype(np.int64)
    )


class Net(nn.Module):
    """Conv-BN-ReLU blocks with one residual pair, then a two-layer classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32))
        self.body = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 28, 28]`` images -> ``[B, 10]`` logits."""
        x = self.stem(x)
        x = F.max_pool2d(F.relu(x + self.res(x)), 2)
        x = F.max_pool2d(self.body(x), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float) -> None:
    """SGD with momentum, batch 128."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - 127, 128):
            idx = perm[i : i + 128]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    return 100.0 * float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the example; returns the accuracies and the ONNX/PyTorch agreement it printed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=20000, help="training images used")
    ap.add_argument("--test", type=int, default=5000, help="test images used")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--flops", default="50%", help="FLOPs target of the pruned model")
    ap.add_argument("--candidates", type=int, default=6, help="subnets scored by the search")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    xtr, ytr = load("train", args.train)
    xte, yte = load("test", args.test)
    xval, yval = xtr[-1000:], ytr[-1000:]  # the search scores on training data, never on test
    example = xtr[:1]

    model = Net()
    train(model, xtr, ytr, args.epochs, 0.05)
    acc = {"float": accuracy(model, xte, yte)}
    flops0 = count_flops(model, example)

    model, _ = mtp.prune(
        model,
        "fastnas",
        {"flops": args.flops},
        example,
        {
            "score_func": lambda m: accuracy(m, xval, yval),
            "data_loader": [xtr[i : i + 256] for i in range(0, 1024, 256)],
            "num_candidates": args.candidates,
        },
    )
    train(model, xtr, ytr, 1, 0.01)
    acc["pruned"] = accuracy(model, xte, yte)

    def forward_loop(m: nn.Module) -> None:
        for i in range(0, 1024, 256):
            m(xtr[i : i + 256])

    with torch.no_grad():
        model = mtq.quantize(model, copy.deepcopy(mtq.INT8_DEFAULT_CFG), forward_loop)
    acc["pruned+int8"] = accuracy(model, xte, yte)

    with tempfile.TemporaryDirectory() as tmp:
        mto.save(model, f"{tmp}/model.pth")
        restored = mto.restore(Net().eval(), f"{tmp}/model.pth")
        with torch.no_grad():
            same = torch.equal(restored(xte[:256]), model(xte[:256]))
        export_onnx(
            model,
            (xte[:1],),
            f"{tmp}/model.onnx",
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        )
        import onnxruntime as ort

        sess = ort.InferenceSession(f"{tmp}/model.onnx", providers=["CPUExecutionProvider"])
        (onnx_logits,) = sess.run(None, {sess.get_inputs()[0].name: xte.numpy()})
    with torch.no_grad():
        agree = (
            float((torch.from_numpy(onnx_logits).argmax(1) == model(xte).argmax(1)).float().mean())
            * 100
        )

    print(f"\n{'model':<14}{'test acc %':>11}")
    for name, a in acc.items():
        print(f"{name:<14}{a:>11.2f}")
    print(
        f"FLOPs: {count_flops(restored, example) / flops0:.0%} of the float model; "
        f"mto.restore reproduces outputs exactly: {same}; "
        f"onnxruntime top-1 agrees with PyTorch on {agree:.2f}% of test images"
    )
    return {**acc, "onnx_agreement": agree, "restore_exact": float(same)}


if __name__ == "__main__":
    main()
