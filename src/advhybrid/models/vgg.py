"""VGG19 with batch norm for 32x32: sixteen 3x3 conv+BN+ReLU, five max-pools (32 -> 1), one Linear."""
from __future__ import annotations

import torch
from torch import nn

from .common import Channels, ConvBNAct


VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, cfg: tuple, num_classes: int, ch: Channels):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(ConvBNAct(cin, ch(v), 3))
                cin = ch(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg19bn(num_classes: int, ch: Channels) -> VGG:
    return VGG(VGG19, num_classes, ch)
