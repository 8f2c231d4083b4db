"""What the AEs add: the defended model against its same-sources control, on the Hybrid test AEs
and on their real sources, and the difference between the two (a difference in differences).

A defended model that beats its control on the AEs by as much as it beats it on the real images
has learned to classify better, not to resist the perturbation. The AE-specific effect is

    DiD = (defended - control on the AEs) - (defended - control on the real images)

Every source of the Hybrid test split contributes one real image and one AE, so the four
outcomes of a source (each model, each image) are paired, and the interval is a bootstrap over
sources that keeps each source's four outcomes together. Across training seeds, the same
difference is averaged and given a t-interval over seeds.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import numpy as np
from scipy import stats

FIGURES = ("adversarial", "real", "did")


def paired_sources(ok: np.ndarray, test: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(correct on the real image, correct on its AE), one row per source, sorted by source id."""
    adv = np.asarray(test["is_adv"]).astype(bool)
    sid = np.asarray(test["source_id"], np.int64)
    r, a = np.argsort(sid[~adv], kind="stable"), np.argsort(sid[adv], kind="stable")
    if not np.array_equal(sid[~adv][r], sid[adv][a]):
        raise ValueError("Hybrid test split: real images and AEs must pair one to one by source_id")
    ok = np.asarray(ok, bool)
    return ok[~adv][r], ok[adv][a]


def ae_effect(ok_a: np.ndarray, ok_b: np.ndarray, test: dict[str, np.ndarray], n_boot: int = 2000,
              seed: int = 0) -> dict[str, Any]:
    """Model A (defended) minus model B (control) on the AEs, on the real images, and the DiD.

    ok_a, ok_b: per image of the test split, prediction == label. Each figure comes with a 95%
    percentile interval from `n_boot` bootstrap resamples of the sources. A source's
    contribution to the two differences takes one of nine (adversarial, real) values in
    {-1, 0, 1}^2, so resampling n sources is a multinomial draw over those nine cells: the
    same bootstrap as resampling rows, at the cost of nine numbers per resample.
    """
    real_a, adv_a = paired_sources(ok_a, test)
    real_b, adv_b = paired_sources(ok_b, test)
    d_adv = adv_a.astype(int) - adv_b.astype(int)
    d_real = real_a.astype(int) - real_b.astype(int)
    n = len(d_adv)
    if n == 0:
        nan = math.nan
        return {"n_sources": 0, **{f: {"diff": nan, "low": nan, "high": nan} for f in FIGURES}}
    cell = (d_adv + 1) * 3 + (d_real + 1)
    freq = np.bincount(cell, minlength=9) / n
    grid_adv, grid_real = np.repeat([-1, 0, 1], 3), np.tile([-1, 0, 1], 3)
    counts = np.random.default_rng(seed).multinomial(n, freq, size=n_boot) / n
    boot = {"adversarial": counts @ grid_adv, "real": counts @ grid_real}
    boot["did"] = boot["adversarial"] - boot["real"]
    point = {"adversarial": d_adv.mean(), "real": d_real.mean()}
    point["did"] = point["adversarial"] - point["real"]
    out: dict[str, Any] = {"n_sources": n, "n_boot": n_boot,
                           "acc": {"defended_adversarial": adv_a.mean(), "defended_real": real_a.mean(),
                                   "control_adversarial": adv_b.mean(), "control_real": real_b.mean()}}
    for f in FIGURES:
        lo, hi = np.quantile(boot[f], [0.025, 0.975])
        out[f] = {"diff": float(point[f]), "low": float(lo), "high": float(hi)}
    out["acc"] = {k: float(v) for k, v in out["acc"].items()}
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float | int]:
    """Mean of `values` with its t-interval (Student, n - 1 degrees of freedom); nan below 2 values."""
    v = [float(x) for x in values]
    n = len(v)
    mean = statistics.fmean(v) if v else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "low": math.nan, "high": math.nan, "sd": math.nan}
    sd = statistics.stdev(v)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half, "sd": sd}


def seed_effect(seeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Across training seeds: defended minus control on the AEs, on the real images and the DiD,
    one value per seed (from each run's whole-split accuracies), then their mean and t-interval."""
    per = {"adversarial": [], "real": []}
    for s in seeds:
        d, c = s["defended"], s["control"]
        per["adversarial"].append(d["test_acc_adv"] - c["test_acc_adv"])
        per["real"].append(d["test_acc_real"] - c["test_acc_real"])
    per["did"] = [a - r for a, r in zip(per["adversarial"], per["real"])]
    return {"seeds": [s["seed"] for s in seeds], **{f: t_interval(per[f]) | {"values": per[f]} for f in FIGURES}}
