"""The paper's mixed tests (IV-B): 1,000 images at 97/3, 95/5 and 90/10 real/adversarial.

The paper reports one draw; one draw of 30 adversarial images moves by several points from
draw to draw, so we repeat the draw and report a mean with a 95% interval.
"""
from __future__ import annotations

import numpy as np

from .metrics import accuracy_by_kind, classification_metrics, interval


def draw_mixed(is_adv: np.ndarray, n: int, adv_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of `n` distinct images, round(n * adv_fraction) of them adversarial."""
    if not 0.0 <= adv_fraction <= 1.0:
        raise ValueError(f"adversarial fraction must be in [0, 1], got {adv_fraction}")
    is_adv = np.asarray(is_adv).astype(bool)
    n_adv = int(round(n * adv_fraction))
    n_real = n - n_adv
    adv_pool, real_pool = np.flatnonzero(is_adv), np.flatnonzero(~is_adv)
    if n_adv > len(adv_pool) or n_real > len(real_pool):
        raise ValueError(
            f"a draw of {n} at {adv_fraction:.0%} adversarial needs {n_real} real and {n_adv} "
            f"adversarial images; the test split has {len(real_pool)} and {len(adv_pool)}"
        )
    return np.concatenate([rng.choice(real_pool, n_real, replace=False), rng.choice(adv_pool, n_adv, replace=False)])


def mixed_eval(
    y_true: np.ndarray, y_pred: np.ndarray, is_adv: np.ndarray,
    n: int, adv_fraction: float, draws: int, seed: int,
) -> dict[str, dict[str, float]]:
    """Per figure (acc_real, acc_adv, accuracy, precision, recall): mean and 95% interval."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[float]] = {}
    for _ in range(draws):
        idx = draw_mixed(is_adv, n, adv_fraction, rng)
        figures = {**accuracy_by_kind(y_true[idx], y_pred[idx], is_adv[idx]),
                   **classification_metrics(y_true[idx], y_pred[idx])}
        for k, v in figures.items():
            rows.setdefault(k, []).append(v)
    return {k: interval(np.array(v)) for k, v in rows.items()}
