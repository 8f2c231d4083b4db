"""What the CIFAR networks share: the channel-scaling callable and the pooled classifier head."""
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
