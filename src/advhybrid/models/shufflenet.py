"""ShuffleNetV2 2.0x for 32x32: a 3x3/1 stem and no max-pool, so the three stages go 32 -> 4."""
from __future__ import annotations

import torch
from torch import nn

from .common import Channels, ConvBNAct, pooled_logits


STAGES = (244, 488, 976)  # the 2.0x configuration
UNITS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: half the channels pass through, the other half go 1x1 -> dw 3x3 -> 1x1.
    Stride 2: both halves come from the full input (the left one through dw 3x3/2 -> 1x1)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if cout % 2:
            raise ValueError(f"ShuffleNetV2 units need an even channel count, got {cout}")
        half = cout // 2
        if stride == 1 and cin != cout:
            raise ValueError(f"a stride-1 ShuffleNetV2 unit keeps its width, got {cin} -> {cout}")
        self.stride = stride
        self.left = nn.Sequential()
        if stride == 2:
            self.left = nn.Sequential(
                ConvBNAct(cin, cin, 3, 2, groups=cin, activation_layer=None),
                ConvBNAct(cin, half, 1),
            )
        bcin = cin if stride == 2 else half
        self.right = nn.Sequential(
            ConvBNAct(bcin, half, 1),
            ConvBNAct(half, half, 3, stride, groups=half, activation_layer=None),
            ConvBNAct(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.right(b)), dim=1)
        else:
            out = torch.cat((self.left(x), self.right(x)), dim=1)
        return channel_shuffle(out)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int, ch: Channels):
        super().__init__()
        self.stem = ConvBNAct(3, ch(24), 3)
        stages, cin = [], ch(24)
        for c, n in zip(STAGES, UNITS):
            stages += [ShuffleUnit(cin if j == 0 else ch(c), ch(c), 2 if j == 0 else 1) for j in range(n)]
            cin = ch(c)
        self.stages = nn.Sequential(*stages)
        self.head = ConvBNAct(cin, ch(2048), 1)
        self.fc = nn.Linear(ch(2048), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_logits(self.fc, self.head(self.stages(self.stem(x))))


def shufflenetv2(num_classes: int, ch: Channels) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes, ch)
