"""White-box attacks on a defended model: PGD over a range of budgets, standard AutoAttack, and a
random-noise control, with the sanity checks Carlini et al. (2019) ask of any robustness claim.

The attacks are torchattacks' (a maintained implementation of PGD, APGD, APGD-T, FAB and Square
that follows the original papers), run in fp32 on images in [0, 1]. AutoAttack is composed here
from its four attacks, because torchattacks' `AutoAttack` wrapper builds APGD with its 10-step
default instead of the standard version's 100 (fra31/auto-attack, version='standard').
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torchattacks
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm

from advhybrid.device import images_to_device, strict_fp32, to_float


class AutoAttackSettings(BaseModel):
    """AutoAttack's settings (params.yaml: robustness.autoattack), typed and bounded here once;
    the params schema (advhybrid.schema) takes them from this class."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    eps_255: float = Field(gt=0, le=255)
    apgd_steps: int = Field(ge=1)
    apgd_restarts: int = Field(ge=1)
    apgdt_steps: int = Field(ge=1)
    target_classes: Literal[9]  # every other CIFAR-10 class: what torchattacks' APGD-T and FAB-T target
    fab_steps: int = Field(ge=1)
    square_queries: int = Field(ge=1)
    rho: float = Field(gt=0, lt=1)


# fra31/auto-attack, version='standard' for L-inf: the settings RobustBench reports with.
AUTOATTACK_STANDARD = AutoAttackSettings(eps_255=8.0, apgd_steps=100, apgd_restarts=1, apgdt_steps=100,
                                         target_classes=9, fab_steps=100, square_queries=5000, rho=0.75)


def deviations(s: AutoAttackSettings) -> dict[str, tuple[float, float]]:
    """{setting: (ours, standard)} for every setting that is not the standard version's."""
    std = AUTOATTACK_STANDARD.model_dump()
    return {k: (v, std[k]) for k, v in s.model_dump().items() if v != std[k]}


def autoattack(model: nn.Module, s: AutoAttackSettings, n_classes: int = 10, seed: int = 0) -> torchattacks.MultiAttack:
    """APGD-CE, then APGD-T, FAB-T and Square on what survives (torchattacks.MultiAttack)."""
    if s.target_classes != n_classes - 1:
        # torchattacks targets every other class; the standard version's 9 is exactly that on CIFAR-10
        raise ValueError(f"AutoAttack: target_classes={s.target_classes} must be n_classes - 1 = {n_classes - 1}")
    eps = s.eps_255 / 255
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, norm="Linf", eps=eps, steps=s.apgd_steps, n_restarts=s.apgd_restarts,
                          loss="ce", rho=s.rho, seed=seed),
        torchattacks.APGDT(model, norm="Linf", eps=eps, steps=s.apgdt_steps, n_restarts=1, rho=s.rho,
                           n_classes=n_classes, seed=seed),
        torchattacks.FAB(model, norm="Linf", eps=eps, steps=s.fab_steps, n_restarts=1, multi_targeted=True,
                         n_classes=n_classes, seed=seed),
        torchattacks.Square(model, norm="Linf", eps=eps, n_queries=s.square_queries, n_restarts=1, seed=seed),
    ])


@torch.no_grad()
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Boolean per image: fp32 prediction equals the label."""
    return torch.cat([model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]
                      for i in range(0, len(x), batch_size)]) if len(x) else torch.zeros(0, dtype=torch.bool)


@torch.no_grad()
@strict_fp32()
def predict_fp32(model: nn.Module, images_u8: np.ndarray, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """Labels in fp32 whatever the device (no autocast): robustness figures are fp32 throughout."""
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = to_float(images_to_device(images_u8[i : i + batch_size], device)).contiguous()
        out.append(model(x).argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def robust_under(attack_factory, model: nn.Module, x: torch.Tensor, y: torch.Tensor, restarts: int,
                 batch_size: int, desc: str) -> torch.Tensor:
    """Per image: still classified correctly after every restart of the attack.

    Only images that are still correct are attacked again: a restart can only turn a robust
    image into a broken one, so attacking the broken ones again would change nothing.
    """
    alive = correct(model, x, y, batch_size)
    for r in range(restarts):
        idx = alive.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        atk = attack_factory(r)
        for i in tqdm(range(0, len(idx), batch_size), desc=f"{desc} restart {r + 1}/{restarts}", leave=False):
            j = idx[i : i + batch_size]
            adv = atk(x[j], y[j])
            alive[j] = correct(model, adv, y[j], batch_size)
    return alive


def pgd_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, alpha: float,
               restarts: int, batch_size: int, seed: int = 0, desc: str = "PGD") -> torch.Tensor:
    """L-inf PGD with a random start (torchattacks.PGD), `restarts` times; per-image robustness."""
    def factory(r: int):
        torch.manual_seed(seed * 1000 + r)  # torchattacks draws the random start from the global RNG
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    return robust_under(factory, model, x, y, restarts, batch_size, desc)


def noise_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
                  batch_size: int) -> torch.Tensor:
    """Control: uniform noise in the same L-inf ball, rounded to the uint8 grid."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    noise = (torch.rand(x.shape, generator=g, device=x.device) * 2 - 1) * eps
    noisy = (x + noise).clamp(0, 1).mul(255).round().div(255)
    return correct(model, noisy, y, batch_size)


def sanity_checks(clean_acc: float, pgd_acc: dict[float, float], masking_ratio: float = 0.5) -> dict[str, dict]:
    """Checks a robustness evaluation must pass before its numbers mean anything.

    monotone: accuracy cannot rise with the budget (16/255 <= 8/255 <= 4/255...);
    no_gradient_masking: at the largest budget PGD must bring accuracy far below clean
    (at most `masking_ratio` of it): a model that keeps most of its accuracy at 16/255 under
    white-box PGD is hiding its gradient, not robust (Carlini et al. 2019, section 5).
    """
    eps = sorted(pgd_acc)
    accs = [pgd_acc[e] for e in eps]
    mono = all(b <= a for a, b in zip(accs, accs[1:]))
    top = eps[-1]
    masked = pgd_acc[top] > masking_ratio * clean_acc
    return {
        "monotone": {"ok": mono, "detail": ", ".join(f"{e * 255:g}/255: {a:.3f}" for e, a in zip(eps, accs))},
        "no_gradient_masking": {"ok": not masked,
                                "detail": f"PGD at {top * 255:g}/255 {pgd_acc[top]:.3f} vs clean {clean_acc:.3f} "
                                          f"(flagged above {masking_ratio:g} x clean)"},
    }


def to_inputs(images_u8: np.ndarray, labels: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC -> float NCHW in [0, 1] (fp32, contiguous: the attacks' own convention)."""
    x = to_float(images_to_device(images_u8, device)).contiguous()
    return x, torch.as_tensor(labels, dtype=torch.long, device=device)
