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


def disjoint_stratified_slices(
    labels: np.ndarray, n_each: int, n_slices: int, seed: int, num_classes: int = 10
) -> list[np.ndarray]:
    """`n_slices` disjoint, class-stratified index sets of `n_each` items each (sorted).

    Each target model attacks its own slice, so no source image is attacked twice and the
    Hybrid pool has as many distinct sources as the attack budget allows. Slice i's classes get
    the same counts as `stratified_subset(labels, n_each, ...)` would give.
    """
    labels = np.asarray(labels)
    if n_each <= 0 or n_slices <= 0:
        raise ValueError(f"slice size and count must be positive, got {n_each} x {n_slices}")
    if n_each * n_slices > len(labels):
        raise ValueError(f"{n_slices} disjoint slices of {n_each} need {n_each * n_slices} items, "
                         f"only {len(labels)} exist")
    per_class = np.full(num_classes, n_each // num_classes)
    per_class[: n_each % num_classes] += 1
    rng = np.random.default_rng(seed)
    slices: list[list[np.ndarray]] = [[] for _ in range(n_slices)]
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        need = per_class[c] * n_slices
        if len(pool) < need:
            raise ValueError(f"class {c} has {len(pool)} items, {n_slices} slices x {per_class[c]} asked for")
        chosen = rng.permutation(pool)[:need].reshape(n_slices, per_class[c])
        for i in range(n_slices):
            slices[i].append(chosen[i])
    return [np.sort(np.concatenate(parts)) for parts in slices]
