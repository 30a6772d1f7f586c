"""A small CNN trained here on scikit-learn's digits — real accuracy without downloads.

The 8×8 digit images are upsampled (bilinear) to ``size``×``size`` and split into a
seeded train/validation split, so a search's report can show accuracy against latency.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DigitsData", "load_digits_data", "DigitsCNN", "train_digits_cnn", "accuracy"]


@dataclass(frozen=True)
class DigitsData:
    x_train: torch.Tensor  # (N, 1, size, size), standardised
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1,) + tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def load_digits_data(size: int = 32, *, val_fraction: float = 0.25, seed: int = 0) -> DigitsData:
    """scikit-learn's 1,797 digits upsampled to ``size``×``size``, split seeded into train/val."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=gen)
    n_val = int(len(y) * val_fraction)
    val, tr = perm[:n_val], perm[n_val:]
    return DigitsData(x[tr], y[tr], x[val], y[val])


class DigitsCNN(nn.Module):
    """Four 3×3 conv blocks (width ``w``, 2w, 4w, 4w) with BN, two max-pools, and a linear head."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU())

        self.features = nn.Sequential(block(1, w), block(w, 2 * w), nn.MaxPool2d(2),
                                      block(2 * w, 4 * w), nn.MaxPool2d(2), block(4 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``(x, y)``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(y)


def train_digits_cnn(data: DigitsData, *, width: int = 16, epochs: int = 6, lr: float = 3e-3,
                     batch: int = 64, seed: int = 0, model: nn.Module | None = None) -> nn.Module:
    """Train (or fine-tune, if ``model`` is given) a :class:`DigitsCNN` with Adam; returns it in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = model if model is not None else DigitsCNN(width)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        n = len(data.y_train)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, batch):
                idx = perm[i:i + batch]
                opt.zero_grad()
                loss = F.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
                loss.backward()
                opt.step()
    return net.eval()
