"""Does the defence hold? The figures eval_robustness computes for one model, and the paired
comparisons between models on the Hybrid test split.

White-box figures come from attacks/whitebox.py on a fixed, class-stratified subset of the Hybrid
test split's real images; whole-split figures from plain predictions. Every accuracy carries its
Wilson 95% interval; every comparison is paired (same images) with McNemar's exact test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from advhybrid.attacks import whitebox as wb
from advhybrid.evaluation.stats import accuracy_with_interval, paired_comparison


@dataclass(frozen=True)
class RobustnessSettings:
    eps_255: tuple[float, ...] = (1, 2, 4, 8, 16)
    pgd_steps: int = 20
    pgd_step_255: float = 2.0
    pgd_restarts: int = 2
    pgd_check_steps: int = 100        # PGD-100 vs PGD-20 on the adversarially trained model
    noise_eps_255: float = 8.0
    masking_ratio: float = 0.5
    autoattack: wb.AutoAttackSettings = wb.AUTOATTACK_STANDARD
    autoattack_images: int = 500      # the first N of the subset (class-stratified order)
    batch_size: int = 250
    seed: int = 0


def whitebox_figures(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: RobustnessSettings, name: str,
                     check_convergence: bool = False) -> dict[str, Any]:
    """Clean, noise, PGD per eps (and PGD-100 when asked), AutoAttack: per-image booleans -> rates."""
    model = model.float().eval().requires_grad_(False)
    alpha = s.pgd_step_255 / 255
    clean = wb.correct(model, x, y, s.batch_size)
    out: dict[str, Any] = {"n": len(y), "clean": accuracy_with_interval(clean.cpu().numpy())}
    noise = wb.noise_correct(model, x, y, s.noise_eps_255 / 255, s.seed, s.batch_size)
    out["noise"] = accuracy_with_interval(noise.cpu().numpy())
    pgd = {}
    for e in s.eps_255:
        ok = wb.pgd_robust(model, x, y, e / 255, s.pgd_steps, alpha, s.pgd_restarts, s.batch_size, s.seed,
                           desc=f"{name} PGD-{s.pgd_steps} {e:g}/255")
        pgd[f"{e:g}"] = accuracy_with_interval(ok.cpu().numpy())  # keyed "8" for 8/255: JSON keys are strings
    out["pgd"] = pgd
    checks = wb.sanity_checks(out["clean"]["acc"], {float(e) / 255: v["acc"] for e, v in pgd.items()}, s.masking_ratio)
    if check_convergence and "8" in pgd:
        ok = wb.pgd_robust(model, x, y, 8 / 255, s.pgd_check_steps, alpha, s.pgd_restarts, s.batch_size, s.seed,
                           desc=f"{name} PGD-{s.pgd_check_steps} 8/255")
        long = accuracy_with_interval(ok.cpu().numpy())["acc"]
        out["pgd_long_8"] = {"steps": s.pgd_check_steps, "acc": long}
        gap = pgd["8"]["acc"] - long
        checks["pgd_converged"] = {"ok": gap <= 0.01, "detail": f"PGD-{s.pgd_steps} {pgd['8']['acc']:.3f} vs "
                                   f"PGD-{s.pgd_check_steps} {long:.3f} at 8/255 (flagged above 1 point)"}
    n_aa = min(s.autoattack_images, len(y))
    xa, ya = x[:n_aa], y[:n_aa]
    alive = wb.correct(model, xa, ya, s.batch_size)
    idx = alive.nonzero().squeeze(1)
    if len(idx):
        adv = wb.autoattack(model, s.autoattack, seed=s.seed)
        for i in range(0, len(idx), s.batch_size):
            j = idx[i : i + s.batch_size]
            alive[j] = wb.correct(model, adv(xa[j], ya[j]), ya[j], s.batch_size)
    out["autoattack"] = accuracy_with_interval(alive.cpu().numpy()) | {
        "eps_255": s.autoattack.eps_255, "deviations": {k: list(v) for k, v in wb.deviations(s.autoattack).items()}}
    out["checks"] = checks
    return out


def split_figures(pred: np.ndarray, test: dict[str, np.ndarray]) -> dict[str, Any]:
    """Whole Hybrid test split: accuracy on real images and AEs (Wilson), the (real, AE) pairs of
    each source compared with McNemar, and AE accuracy by the target model that made them."""
    ok = pred == test["labels"]
    adv = test["is_adv"].astype(bool)
    order_r = np.argsort(test["source_id"][~adv], kind="stable")
    order_a = np.argsort(test["source_id"][adv], kind="stable")
    if not np.array_equal(test["source_id"][~adv][order_r], test["source_id"][adv][order_a]):
        raise ValueError("Hybrid test split: real images and AEs must pair one to one by source_id")
    names = [str(n) for n in test["target_names"]]
    by_target = {names[t]: accuracy_with_interval(ok[adv & (test["target_model"] == t)])
                 for t in range(len(names)) if (adv & (test["target_model"] == t)).any()}
    return {
        "all": accuracy_with_interval(ok), "real": accuracy_with_interval(ok[~adv]),
        "adversarial": accuracy_with_interval(ok[adv]),
        "real_vs_adversarial": paired_comparison(ok[~adv][order_r], ok[adv][order_a]),
        "adversarial_by_target": by_target,
    }


def compare_on_aes(pred_a: np.ndarray, pred_b: np.ndarray, test: dict[str, np.ndarray]) -> dict[str, Any]:
    """Model A against model B on the same Hybrid test AEs (and on the same real images)."""
    adv = test["is_adv"].astype(bool)
    ok_a, ok_b = pred_a == test["labels"], pred_b == test["labels"]
    return {"adversarial": paired_comparison(ok_a[adv], ok_b[adv]), "real": paired_comparison(ok_a[~adv], ok_b[~adv])}
