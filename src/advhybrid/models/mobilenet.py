"""MobileNetV2 for 32x32: a 3x3/1 stem and the 24-channel stage at stride 1 (32 -> 4 overall)."""
from __future__ import annotations

import torch
from torch import nn

from .common import Channels, ConvBNAct, pooled_logits


# (expansion t, output channels c, blocks n, first stride s); ImageNet's second stride is 1 here.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> linear 1x1 project; residual when the shape is unchanged."""

    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hidden = cin * t
        expand = [ConvBNAct(cin, hidden, 1, activation_layer=nn.ReLU6)] if t != 1 else []
        self.block = nn.Sequential(
            *expand,
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation_layer=nn.ReLU6),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, ch: Channels):
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, ch(32), 3, activation_layer=nn.ReLU6)]
        cin = ch(32)
        for t, c, n, s in SETTINGS:
            for j in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if j == 0 else 1, t))
                cin = ch(c)
        layers.append(ConvBNAct(cin, ch(1280), 1, activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(ch(1280), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_logits(self.classifier, self.features(x))


def mobilenetv2(num_classes: int, ch: Channels) -> MobileNetV2:
    return MobileNetV2(num_classes, ch)
