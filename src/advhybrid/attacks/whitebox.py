"""White-box attacks on a defended model: PGD over a range of budgets, standard AutoAttack, and a
random-noise control, with the sanity checks Carlini et al. (2019) ask of any robustness claim.
Everything runs in fp32 on images in [0, 1] and returns, per image, whether it is still
classified correctly.

PGD is Madry et al.'s (2018) as the field runs it: a random start in the ball, the cross-entropy
loss, signed steps of 2.5 * eps / steps at each budget, restarts on the images that survive. Its
loop is torchattacks.PGD's (a test pins the two equal from the same start) with one change: each
image draws its random start from its own generator, so its outcome does not depend on which
images share its batch, and the chained budget sweep (`pgd_sweep`) compares like with like.

AutoAttack is composed here from torchattacks' APGD, APGD-T, FAB and Square (a port of
fra31/auto-attack) with every setting of fra31's version='standard' for L-inf written out:
torchattacks' own `AutoAttack` wrapper builds APGD with 10 steps instead of 100, and its Square
rescales its schedule (resc_schedule=True) where the standard version does not. A test pins each
setting against fra31's; `deviations` names the ones params.yaml changes.
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchattacks
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm

from advhybrid.device import images_to_device, strict_fp32, to_float

UNBOUNDED = 1.0  # 255/255: the whole image cube, where any image can be turned into any other


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
    """{setting: (ours, standard)} for every setting that is not the standard version's.

    Settings that are not params are fixed at the standard value in `autoattack`. The seed is
    no setting of the standard version: fra31 reseeds every attack at every batch with
    AutoAttack(seed=...) (the time when None); torchattacks reseeds the same way with `seed`.
    """
    std = AUTOATTACK_STANDARD.model_dump()
    return {k: (v, std[k]) for k, v in s.model_dump().items() if v != std[k]}


def autoattack(model: nn.Module, s: AutoAttackSettings, n_classes: int = 10, seed: int = 0) -> torchattacks.MultiAttack:
    """APGD-CE, then APGD-T, FAB-T and Square on what survives (torchattacks.MultiAttack), in
    fra31's order; the comments give fra31's values (AutoAttack.__init__, set_version('standard'))."""
    if s.target_classes != n_classes - 1:
        # torchattacks targets every other class; the standard version's 9 is exactly that on CIFAR-10
        raise ValueError(f"AutoAttack: target_classes={s.target_classes} must be n_classes - 1 = {n_classes - 1}")
    eps = s.eps_255 / 255
    return torchattacks.MultiAttack([
        # APGDAttack(n_iter=100, eot_iter=1, rho=.75), loss 'ce', n_restarts=1
        torchattacks.APGD(model, norm="Linf", eps=eps, steps=s.apgd_steps, n_restarts=s.apgd_restarts,
                          loss="ce", eot_iter=1, rho=s.rho, seed=seed),
        # APGDAttack_targeted(n_iter=100, n_restarts=1, eot_iter=1, rho=.75), n_target_classes=9
        torchattacks.APGDT(model, norm="Linf", eps=eps, steps=s.apgdt_steps, n_restarts=1, eot_iter=1, rho=s.rho,
                           n_classes=n_classes, seed=seed),
        # 'fab-t': FABAttack_PT(n_iter=100, alpha_max=.1, eta=1.05, beta=.9), targeted, n_restarts=1, n_target_classes=9
        torchattacks.FAB(model, norm="Linf", eps=eps, steps=s.fab_steps, n_restarts=1, alpha_max=0.1, eta=1.05,
                         beta=0.9, multi_targeted=True, n_classes=n_classes, seed=seed),
        # SquareAttack(p_init=.8, n_queries=5000, n_restarts=1, loss 'margin', resc_schedule=False)
        torchattacks.Square(model, norm="Linf", eps=eps, n_queries=s.square_queries, n_restarts=1, p_init=0.8,
                            loss="margin", resc_schedule=False, seed=seed),
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


def attack_survivors(attack: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], model: nn.Module,
                     x: torch.Tensor, y: torch.Tensor, alive: torch.Tensor, batch_size: int,
                     desc: str) -> torch.Tensor:
    """`alive` after `attack(x, y, ids)` on the images still alive: an image it breaks is broken,
    and one already broken is not attacked (nothing could make it robust again)."""
    alive = alive.clone()
    idx = alive.nonzero().squeeze(1)
    for i in tqdm(range(0, len(idx), batch_size), desc=desc, leave=False):
        j = idx[i : i + batch_size]
        alive[j] = correct(model, attack(x[j], y[j], j), y[j], batch_size)
    return alive


def pgd_alpha(eps: float, steps: int) -> float:
    """Madry et al.'s step, 2.5 * eps / steps: enough to cross the ball from any start."""
    return 2.5 * eps / steps


def random_starts(like: torch.Tensor, seed: int, restart: int) -> torch.Tensor:
    """Uniform in [-1, 1] for every image of `like`, drawn at once from a generator seeded by
    (seed, restart): row i is image i's start whichever images are attacked with it."""
    g = torch.Generator(device=like.device).manual_seed(seed * 1_000_003 + restart)
    return torch.rand(like.shape, generator=g, device=like.device) * 2 - 1


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
        start: torch.Tensor) -> torch.Tensor:
    """L-inf PGD from x + start, torchattacks.PGD's loop: signed cross-entropy steps, each projected
    on the ball and on [0, 1]. The loss is summed, not averaged, so no image's gradient depends
    on how many share its batch (the sign is the same unless the mean underflows)."""
    adv = (x + start).clamp(0, 1).detach()
    with torch.enable_grad():
        for _ in range(steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y, reduction="sum"), adv)
            adv = adv.detach() + alpha * grad.sign()
            adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return adv


def pgd_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alive: torch.Tensor, eps: float, steps: int,
               restarts: int, batch_size: int, seed: int = 0, desc: str = "PGD") -> torch.Tensor:
    """`alive` after PGD at `eps` with random starts, `restarts` times, each on the survivors."""
    alpha = pgd_alpha(eps, steps)
    for r in range(restarts):
        starts = random_starts(x, seed, r)  # one tensor the size of x: no per-image work

        def run(xb: torch.Tensor, yb: torch.Tensor, ids: torch.Tensor, starts: torch.Tensor = starts) -> torch.Tensor:
            return pgd(model, xb, yb, eps, alpha, steps, eps * starts[ids])
        alive = attack_survivors(run, model, x, y, alive, batch_size, f"{desc} {eps * 255:g}/255 restart {r + 1}/{restarts}")
    return alive


def pgd_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alive: torch.Tensor, eps: Sequence[float],
              steps: int, restarts: int, batch_size: int, seed: int = 0, chained: bool = True,
              desc: str = "PGD") -> list[torch.Tensor]:
    """Per budget (increasing), per image: still correct under PGD at that budget.

    The L-inf balls are nested: a perturbation that breaks an image at eps lies in every larger
    ball, so chained (the default) each budget attacks only the survivors of the one before and
    an image broken at a small budget counts as broken at every larger one. Unchained, each
    budget attacks all of `alive` afresh (tests compare the two).
    """
    if list(eps) != sorted(eps):
        raise ValueError(f"pgd_sweep: budgets must increase, got {list(eps)}")
    out, cur = [], alive
    for e in eps:
        cur = pgd_robust(model, x, y, cur if chained else alive, e, steps, restarts, batch_size, seed, desc)
        out.append(cur)
    return out


def autoattack_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alive: torch.Tensor, s: AutoAttackSettings,
                      batch_size: int, seed: int = 0, desc: str = "AutoAttack") -> torch.Tensor:
    """`alive` (PGD's survivors at s.eps_255) after AutoAttack on them."""
    aa = autoattack(model, s, seed=seed)
    return attack_survivors(lambda xb, yb, _ids: aa(xb, yb), model, x, y, alive, batch_size, desc)


def noise_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
                  batch_size: int) -> torch.Tensor:
    """Control: uniform noise in the same L-inf ball, rounded to the uint8 grid."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    noise = (torch.rand(x.shape, generator=g, device=x.device) * 2 - 1) * eps
    noisy = (x + noise).clamp(0, 1).mul(255).round().div(255)
    return correct(model, noisy, y, batch_size)


def _check(ok: bool, decisive: bool, detail: str) -> dict:
    return {"ok": bool(ok), "decisive": bool(decisive), "detail": detail}


def sanity_checks(clean: float, pgd_top: tuple[float, float], unbounded: float,
                  masking_ratio: float = 0.5) -> dict[str, dict]:
    """Checks a robustness evaluation must pass before its numbers mean anything (Carlini et al.
    2019, section 5); `decisive` says whether the figures left the check room to fail.

    no_gradient_masking: PGD at the largest budget (pgd_top = (eps, acc)) keeps at most
    `masking_ratio` of clean accuracy: more at 16/255 is hidden gradients, not robustness.
    unbounded: PGD at 255/255 (on the survivors of the largest budget) must reach 0%; an attack
    that cannot is not following the gradient (masked, or a bug). It can only fail where the
    largest budget left something to attack.
    """
    eps, acc = pgd_top
    return {
        "no_gradient_masking": _check(acc <= masking_ratio * clean, clean > 0,
                                      f"PGD at {eps * 255:g}/255 {acc:.3f} vs clean {clean:.3f} "
                                      f"(flagged above {masking_ratio:g} x clean)"),
        "unbounded": _check(unbounded == 0, acc > 0,
                            f"PGD at 255/255 {unbounded:.3f} on clean {clean:.3f} (flagged above 0)"),
    }


def convergence_check(short: float, long: float, steps: int, long_steps: int, eps_255: float,
                      tol: float = 0.01) -> dict:
    """PGD-`long_steps` on PGD-`steps`' survivors must not take more than `tol` off its accuracy."""
    return _check(short - long <= tol, short > tol,
                  f"PGD-{steps} {short:.3f} vs PGD-{long_steps} on its survivors {long:.3f} at {eps_255:g}/255 "
                  f"(flagged above {tol * 100:g} point)")


def to_inputs(images_u8: np.ndarray, labels: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC -> float NCHW in [0, 1] (fp32, contiguous: the attacks' own convention)."""
    x = to_float(images_to_device(images_u8, device)).contiguous()
    return x, torch.as_tensor(labels, dtype=torch.long, device=device)
