"""Intervals and tests for accuracies measured on a finite test split.

An accuracy of k correct out of n is a binomial proportion: its 95% interval is Wilson's
score interval (honest near 0 and 1, unlike p +- 1.96 se). Two classifiers, or one classifier
on a real image and on the AE made from it, are compared on the SAME items, so the comparison
is paired: McNemar's exact test on the discordant pairs, and Newcombe's score interval for the
difference of paired proportions (Newcombe 1998, method 10).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (nan, nan) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: k={k} must lie in 0..n={n}")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b and c are the two kinds of discordant pairs."""
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(int(b), int(b + c), 0.5).pvalue)


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray, z: float = Z95) -> dict[str, float | int]:
    """A against B on the same items (booleans: item classified correctly).

    Returns both accuracies, their difference (A - B) with Newcombe's paired score interval,
    the discordant counts (b: only A right, c: only B right) and McNemar's exact p-value.
    """
    a_ok, b_ok = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a_ok.shape != b_ok.shape or a_ok.ndim != 1:
        raise ValueError(f"paired_comparison: need two equal-length 1-D arrays, got {a_ok.shape} and {b_ok.shape}")
    n = len(a_ok)
    both, only_a = int((a_ok & b_ok).sum()), int((a_ok & ~b_ok).sum())
    only_b, neither = int((~a_ok & b_ok).sum()), int((~a_ok & ~b_ok).sum())
    if n == 0:
        nan = math.nan
        return {"n": 0, "acc_a": nan, "acc_b": nan, "diff": nan, "diff_low": nan, "diff_high": nan,
                "only_a": 0, "only_b": 0, "p_mcnemar": 1.0}
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, z)
    l2, u2 = wilson_interval(both + only_b, n, z)
    den = math.sqrt((both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither))
    cross = both * neither - only_a * only_b
    # Newcombe's continuity-corrected correlation; 0 when a margin is empty.
    phi = 0.0 if den == 0 else (max(cross - n / 2, 0.0) if cross > 0 else cross) / den
    d = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return {"n": n, "acc_a": p1, "acc_b": p2, "diff": d, "diff_low": max(-1.0, d - dl), "diff_high": min(1.0, d + du),
            "only_a": only_a, "only_b": only_b, "p_mcnemar": mcnemar_exact(only_a, only_b)}


def accuracy_with_interval(correct: np.ndarray) -> dict[str, float | int]:
    """Accuracy of boolean `correct` with its Wilson 95% interval."""
    ok = np.asarray(correct, bool)
    k, n = int(ok.sum()), len(ok)
    lo, hi = wilson_interval(k, n)
    return {"n": n, "acc": k / n if n else math.nan, "low": lo, "high": hi}
