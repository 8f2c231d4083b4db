"""Seeded, class-stratified subsets: how smaller scales take part of CIFAR-10 honestly."""
from __future__ import annotations

import numpy as np


def stratified_subset(labels: np.ndarray, n: int, seed: int, num_classes: int = 10) -> np.ndarray:
    """Sorted indices of `n` items with (as near as possible) equal counts per class.

    `n` at or above len(labels) returns every index, so the full scale reads all the data.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    rng = np.random.default_rng(seed)
    per_class = np.full(num_classes, n // num_classes)
    per_class[: n % num_classes] += 1
    picks = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class[c]:
            raise ValueError(f"class {c} has {len(pool)} items, {per_class[c]} asked for")
        picks.append(rng.choice(pool, per_class[c], replace=False))
    return np.sort(np.concatenate(picks))
