"""What the CIFAR networks share: the channel-scaling callable, the conv-BN-activation block
and the pooled classifier head."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Channels = Callable[[int], int]  # scales a width-1 channel count to the requested width (scale_channels)


def pooled_logits(fc: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """Global average pool, flatten, linear: the head of every network here but VGG, whose
    max-pools already end at 1 x 1. A function, not a module, so state_dict keys stay as saved."""
    return fc(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))


class ConvBNAct(nn.Sequential):
    """Conv (no bias, "same" padding), BatchNorm, then the activation unless it is None: torchvision's
    Conv2dNormActivation as these networks use it, with the same children (0, 1, 2), hence the
    same state_dict keys and, drawn in the same order, the same initial weights. Written here
    because importing torchvision.ops costs over a second, which every stage that builds a
    model paid (tests/test_models.py pins the equivalence)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation_layer: Callable[..., nn.Module] | None = nn.ReLU):
        layers = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout
