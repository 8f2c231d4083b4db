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
    pgd_steps: int = 20               # step 2.5 * eps / steps at each budget (Madry et al.)
    pgd_restarts: int = 2
    pgd_check_steps: int = 100        # PGD-100 on PGD-20's survivors, on the adversarially trained model
    noise_eps_255: float = 8.0
    masking_ratio: float = 0.5
    autoattack: wb.AutoAttackSettings = wb.AUTOATTACK_STANDARD  # on PGD's survivors at its eps_255
    batch_size: int = 250
    seed: int = 0


def to_bits(ok: np.ndarray) -> str:
    """Booleans as a string of '0'/'1', one character per image: compact in JSON."""
    return (np.asarray(ok, bool).astype(np.uint8) + ord("0")).tobytes().decode("ascii")


def from_bits(bits: str) -> np.ndarray:
    """The booleans `to_bits` wrote."""
    b = np.frombuffer(bits.encode("ascii"), np.uint8)
    if not np.isin(b, (ord("0"), ord("1"))).all():
        raise ValueError(f"per-image outcomes must be a string of '0' and '1', got {bits[:40]!r}")
    return b == ord("1")


def whitebox_outcomes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: RobustnessSettings, name: str,
                      check_convergence: bool = False) -> dict[str, np.ndarray]:
    """Per image, still correct: clean, under noise, under PGD per budget (chained), under PGD then
    AutoAttack on its survivors at AutoAttack's budget ("pgd_autoattack"), under PGD at 255/255 on
    the survivors of the largest budget ("unbounded"), and when asked under PGD-<pgd_check_steps> on the
    survivors of PGD at AutoAttack's budget ("pgd_long")."""
    model = model.float().eval().requires_grad_(False)
    if s.autoattack.eps_255 not in s.eps_255:
        raise ValueError(f"AutoAttack's budget {s.autoattack.eps_255:g}/255 must be one of PGD's {list(s.eps_255)}")
    k = s.eps_255.index(s.autoattack.eps_255)
    eps = [e / 255 for e in s.eps_255]
    attack = dict(steps=s.pgd_steps, restarts=s.pgd_restarts, batch_size=s.batch_size, seed=s.seed)
    clean = wb.correct(model, x, y, s.batch_size)
    pgd = wb.pgd_sweep(model, x, y, clean, eps, desc=f"{name} PGD-{s.pgd_steps}", **attack)
    ok = {"clean": clean, "noise": wb.noise_correct(model, x, y, s.noise_eps_255 / 255, s.seed, s.batch_size),
          **{f"pgd_{e:g}": a for e, a in zip(s.eps_255, pgd)},
          "pgd_autoattack": wb.autoattack_robust(model, x, y, pgd[k], s.autoattack, s.batch_size, s.seed,
                                                 desc=f"{name} AutoAttack"),
          # chained too: what the largest budget broke is broken at 255/255, so only its survivors are attacked
          "unbounded": wb.pgd_robust(model, x, y, pgd[-1], wb.UNBOUNDED, desc=f"{name} PGD-{s.pgd_steps}", **attack)}
    if check_convergence:
        ok["pgd_long"] = wb.pgd_robust(model, x, y, pgd[k], eps[k], **(attack | {"steps": s.pgd_check_steps}),
                                       desc=f"{name} PGD-{s.pgd_check_steps}")
    return {f: v.cpu().numpy() for f, v in ok.items()}


def whitebox_figures(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: RobustnessSettings, name: str,
                     check_convergence: bool = False) -> dict[str, Any]:
    """whitebox_outcomes as rates with Wilson intervals, the sanity checks, and the outcomes
    themselves ("per_image": a string of '0'/'1' per figure, in the order of x)."""
    ok = whitebox_outcomes(model, x, y, s, name, check_convergence)
    rate = {f: accuracy_with_interval(v) for f, v in ok.items()}
    top, aa = s.eps_255[-1], s.autoattack.eps_255
    out: dict[str, Any] = {
        "n": len(y), "clean": rate["clean"], "noise": rate["noise"],
        "pgd": {f"{e:g}": rate[f"pgd_{e:g}"] for e in s.eps_255},  # keyed "8" for 8/255: JSON keys are strings
        "pgd_autoattack": rate["pgd_autoattack"] | {
            "eps_255": aa, "deviations": {d: list(v) for d, v in wb.deviations(s.autoattack).items()}},
        "unbounded": rate["unbounded"],
        "checks": wb.sanity_checks(rate["clean"]["acc"], (top / 255, rate[f"pgd_{top:g}"]["acc"]),
                                   rate["unbounded"]["acc"], s.masking_ratio),
    }
    if check_convergence:
        out["pgd_long"] = rate["pgd_long"] | {"eps_255": aa, "steps": s.pgd_check_steps}
        out["checks"]["pgd_converged"] = wb.convergence_check(rate[f"pgd_{aa:g}"]["acc"], rate["pgd_long"]["acc"],
                                                              s.pgd_steps, s.pgd_check_steps, aa)
    out["per_image"] = {f: to_bits(v) for f, v in ok.items()}
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
