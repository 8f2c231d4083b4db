"""ResNet-50 (ImageNet bottleneck design) and ResNet-56 (He et al.'s CIFAR design), for 32x32.

ResNet-50 keeps torchvision's stages but swaps the 7x7/2 stem and max-pool for one 3x3/1 conv,
so the 32x32 input is only downsampled by the three strided stages (32 -> 4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import Channels, pooled_logits


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus a projection when shapes change."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            conv3x3(mid, mid, stride), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs. The shortcut is He et al.'s option A: subsample and zero-pad the channels,
    which adds no parameters (that is what keeps ResNet-56 at 0.85 M)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.branch = nn.Sequential(
            conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            conv3x3(cout, cout), nn.BatchNorm2d(cout),
        )
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(self.branch(x) + shortcut)


class ResNet(nn.Module):
    def __init__(self, stem: int, stages: list[nn.Sequential], features: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(3, stem), nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_logits(self.fc, self.stages(self.stem(x)))


def resnet50(num_classes: int, ch: Channels) -> ResNet:
    stages, cin = [], ch(64)
    for i, (mid, depth) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        mid, cout = ch(mid), ch(mid * 4)
        blocks = [Bottleneck(cin if j == 0 else cout, mid, cout, 2 if i and j == 0 else 1) for j in range(depth)]
        stages.append(nn.Sequential(*blocks))
        cin = cout
    return ResNet(ch(64), stages, cin, num_classes)


def resnet56(num_classes: int, ch: Channels) -> ResNet:
    stages, cin = [], ch(16)
    for i, cout in enumerate((ch(16), ch(32), ch(64))):
        blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if i and j == 0 else 1) for j in range(9)]
        stages.append(nn.Sequential(*blocks))
        cin = cout
    return ResNet(ch(16), stages, cin, num_classes)
