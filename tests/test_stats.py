"""Intervals and paired tests behind every "X points [a, b] better" in the report."""
from __future__ import annotations

import math

import numpy as np
import pytest

from advhybrid.evaluation.stats import accuracy_with_interval, mcnemar_exact, paired_comparison, wilson_interval


def test_wilson_interval_matches_known_values_and_stays_inside_zero_one():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(50, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="k=11 must lie in 0..n=10"):
        wilson_interval(11, 10)


def test_mcnemar_exact_is_the_two_sided_binomial_on_discordant_pairs():
    assert mcnemar_exact(9, 2) == pytest.approx(2 * (1 + 11 + 55) / 2048)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)


def test_paired_comparison_counts_discordant_pairs_and_brackets_the_difference():
    rng = np.random.default_rng(0)
    a = rng.random(500) < 0.8
    b = a.copy()
    flip = rng.random(500) < 0.15
    b[flip] = ~b[flip]
    r = paired_comparison(a, b)
    assert r["only_a"] == int((a & ~b).sum()) and r["only_b"] == int((~a & b).sum())
    assert r["diff"] == pytest.approx(a.mean() - b.mean())
    assert r["diff_low"] < r["diff"] < r["diff_high"]
    # Paired items agree on most: the interval is far narrower than for independent samples.
    lo1, hi1 = wilson_interval(int(a.sum()), 500)
    assert r["diff_high"] - r["diff_low"] < hi1 - lo1


def test_identical_classifiers_differ_by_exactly_nothing_with_p_one():
    a = np.array([1, 0, 1, 1, 0], bool)
    r = paired_comparison(a, a)
    assert r["diff"] == 0 and r["p_mcnemar"] == 1.0 and r["diff_low"] <= 0 <= r["diff_high"]


def test_paired_comparison_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="equal-length"):
        paired_comparison(np.ones(3, bool), np.ones(4, bool))


def test_accuracy_with_interval():
    r = accuracy_with_interval(np.array([True] * 8 + [False] * 2))
    assert r["acc"] == 0.8 and r["low"] < 0.8 < r["high"] and r["n"] == 10
