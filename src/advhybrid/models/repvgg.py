"""RepVGG-A2 for 32x32, with structural re-parameterisation (Ding et al. 2021).

Training-time blocks sum three branches (3x3 conv+BN, 1x1 conv+BN, identity BN); because each
is linear in the input once BN uses its running statistics, `reparameterize()` folds them into
one 3x3 conv with bias, so the deployed network is a plain stack of 3x3 conv + ReLU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import Channels, pooled_logits


A, B = 1.5, 2.75                # RepVGG-A2 width multipliers
DEPTHS = (1, 2, 4, 14, 1)       # stem, then four stages
BASE = (64, 128, 256, 512)
STRIDES = (1, 1, 2, 2, 2)       # ImageNet strides are all 2; at 32x32 the first two are dropped (32 -> 4)


def conv_bn(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout))


def fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of conv-then-BN as one conv, using BN's running statistics."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepVGGBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv3 = conv_bn(cin, cout, 3, stride)
        self.conv1 = conv_bn(cin, cout, 1, stride)
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return F.relu(self.fused(x))
        out = self.conv3(x) + self.conv1(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return F.relu(out)

    @torch.no_grad()
    def reparameterize(self) -> None:
        conv = self.conv3[0]
        k3, b = fold_bn(conv.weight, self.conv3[1])
        k1, b1 = fold_bn(self.conv1[0].weight, self.conv1[1])
        kernel, bias = k3 + F.pad(k1, (1, 1, 1, 1)), b + b1
        if self.identity is not None:
            eye = torch.zeros_like(k3)
            idx = torch.arange(eye.shape[0])
            eye[idx, idx, 1, 1] = 1.0
            kid, bid = fold_bn(eye, self.identity)
            kernel, bias = kernel + kid, bias + bid
        self.fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1, bias=True)
        self.fused.to(device=kernel.device, dtype=kernel.dtype)
        self.fused.weight.copy_(kernel)
        self.fused.bias.copy_(bias)
        self.conv3 = self.conv1 = self.identity = None  # drops the branches from the state dict


class RepVGG(nn.Module):
    def __init__(self, num_classes: int, ch: Channels):
        super().__init__()
        widths = (ch(min(64, int(64 * A))),) + tuple(ch(int(w * m)) for w, m in zip(BASE, (A, A, A, B)))
        blocks, cin = [], 3
        for cout, depth, stride in zip(widths, DEPTHS, STRIDES):
            for j in range(depth):
                blocks.append(RepVGGBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    @property
    def reparameterized(self) -> bool:
        return all(b.fused is not None for b in self.blocks)

    def reparameterize(self) -> None:
        """Fuse every block in place (uses BN running stats: only eval-mode outputs are preserved)."""
        for block in self.blocks:
            if block.fused is None:
                block.reparameterize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_logits(self.fc, self.blocks(x))


def repvgg_a2(num_classes: int, ch: Channels) -> RepVGG:
    return RepVGG(num_classes, ch)
