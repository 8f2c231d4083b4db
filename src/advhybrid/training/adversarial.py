"""Adversarial training's inner step: the batch the model trains on instead of the clean one.

"Fast" adversarial training (Wong, Rice and Kolter, ICLR 2020, "Fast is better than free"):
one FGSM step from a uniformly random start inside the L-inf ball, eps 8/255 and step 10/255 on
CIFAR-10. It is the cheapest defence known to survive white-box PGD, which is why the
robustness study trains it next to the Hybrid models: it shows what a real defence reaches at
the same scale.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..device import autocast, memory_format

Perturb = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def fgsm_random_start(eps: float, alpha: float) -> Perturb:
    """The `perturb` for `fit`: x + delta, delta = clip(U(-eps, eps) + alpha * sign(grad), -eps, eps).

    The gradient is taken with respect to delta only (torch.autograd.grad), so no parameter
    gradient leaks into the training step; the model stays in train mode, as in the paper.
    """
    if not (eps > 0 and alpha > 0):
        raise ValueError(f"fgsm_random_start: eps and alpha must be > 0, got eps={eps}, alpha={alpha}")

    def perturb(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        u = torch.rand(x.shape, device=x.device, generator=gen, dtype=x.dtype)
        delta = ((2 * u - 1) * eps).requires_grad_(True)
        with autocast(x.device):
            loss = F.cross_entropy(model((x + delta).clamp(0, 1)).float(), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        return (x + delta).clamp(0, 1).contiguous(memory_format=memory_format(x.device))

    return perturb
