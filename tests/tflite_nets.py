"""A small CNN with named layers of every kind a per-operator profile maps (conv with fused
BatchNorm/ReLU, max-pool, a Sequential of a 3×3 and a 1×1 conv, depthwise conv, global
average pool, linear), exported to TFLite once per test session by the tests that need it."""

from __future__ import annotations

import torch
from torch import nn

SHAPE = (1, 3, 16, 16)


class NamedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 1))
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.dw(self.block(x))
        return self.fc(torch.flatten(self.gap(x), 1))


def named_net(seed: int = 0) -> NamedNet:
    torch.manual_seed(seed)
    return NamedNet().eval()
