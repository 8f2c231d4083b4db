"""PGD (Madry et al.), untargeted L_inf: the gradient baseline the GAN attack is timed against."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advhybrid.device import autocast


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 10,
    random_start: bool = True,
) -> torch.Tensor:
    """Adversarial images in [0, 1] with ||x_adv - x||_inf <= eps (float NCHW in, float NCHW out)."""
    model = model.eval()
    delta = (torch.rand_like(x) * 2 - 1) * eps if random_start else torch.zeros_like(x)
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        with autocast(x.device):
            loss = F.cross_entropy(model(x + delta).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        # Step, project onto the eps-ball, then back into the image box.
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    return (x + delta.detach()).clamp(0, 1)
