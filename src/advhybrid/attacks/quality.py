"""How far an adversarial image is from its source: L2, Linf (in [0, 1] units) and SSIM.

SSIM follows Wang et al. (2004): Gaussian 11x11 window, sigma 1.5, C1 = (0.01 L)^2,
C2 = (0.03 L)^2 with L = 1, population (co)variances, averaged over the valid window
positions and over the three RGB channels. One depthwise conv2d does all five local moments.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from advhybrid.device import images_to_device, to_float


def perturbation_norms(adv: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image L2 and Linf of adv - clean (float NCHW in [0, 1])."""
    diff = (adv.float() - clean.float()).flatten(1)
    return diff.norm(dim=1), diff.abs().amax(1)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).float().expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM of two float NCHW batches in [0, 1]."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim: expected two equal N x C x H x W batches, got {tuple(a.shape)} and {tuple(b.shape)}")
    # float64: E[x^2] - mu^2 cancels badly in low precision (TF32 convolutions on CUDA moved
    # SSIM by up to 0.08), and the validation suite recomputes it on CPU to compare.
    a, b = a.double(), b.double()
    n, c = a.shape[:2]
    w = _gaussian_window(window, sigma, 5 * c, a.device).to(a.dtype)
    # Stack x, y, x^2, y^2, xy along channels so one grouped conv gives every local mean.
    mu = F.conv2d(torch.cat([a, b, a * a, b * b, a * b], 1), w, groups=5 * c)
    mu_a, mu_b, e_aa, e_bb, e_ab = mu.split(c, dim=1)
    var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).float()


@torch.no_grad()
def image_quality(
    adv_u8: np.ndarray, clean_u8: np.ndarray, device: torch.device | str = "cpu", batch_size: int = 1024
) -> dict[str, np.ndarray]:
    """L2, Linf and SSIM (float32 arrays, one value per image) of uint8 NHWC image pairs."""
    if adv_u8.shape != clean_u8.shape:
        raise ValueError(f"image_quality: shapes differ: {adv_u8.shape} vs {clean_u8.shape}")
    device = torch.device(device)
    out: dict[str, list[torch.Tensor]] = {"l2": [], "linf": [], "ssim": []}
    for i in range(0, len(adv_u8), batch_size):
        a = to_float(images_to_device(adv_u8[i : i + batch_size], device))
        b = to_float(images_to_device(clean_u8[i : i + batch_size], device))
        l2, linf = perturbation_norms(a, b)
        out["l2"].append(l2), out["linf"].append(linf), out["ssim"].append(ssim(a, b))
    return {k: (torch.cat(v).cpu().numpy() if v else np.zeros(0)).astype(np.float32) for k, v in out.items()}
