"""The clean control for a defended model: as many distinct clean CIFAR-10 training images as the
defended model's Hybrid training split holds (real + AE), class by class, none of them the
source of a Hybrid validation or test pair, so the control is tested on images it never saw.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..io import load_npz
from .cifar import CLASSES
from .hybrid import SOURCE_STRIDE

HYBRID_KEYS = ["images", "labels", "is_adv", "source_id"]


class BaselineDataError(ValueError):
    """Not enough eligible clean images for the control."""


def clean_control_indices(
    raw_train_labels: np.ndarray,
    hybrid_train_labels: np.ndarray,
    held_out_source_ids: np.ndarray,
    seed: int,
    class_names: list[str] | None = None,
) -> np.ndarray:
    """Sorted indices into CIFAR-10's training split: per class, as many images as the Hybrid
    training split has images of that class (real and AE counted apart), drawn (seeded) from
    the training images that are not the source of any held-out (validation or test) pair."""
    labels = np.asarray(raw_train_labels)
    held = np.asarray(held_out_source_ids, np.int64)
    held_train = held[held < SOURCE_STRIDE]  # source ids of raw-train sources are their indices
    eligible = np.ones(len(labels), bool)
    eligible[held_train] = False
    want = np.bincount(np.asarray(hybrid_train_labels), minlength=int(labels.max(initial=0)) + 1)
    rng = np.random.default_rng(seed)
    picks = []
    for c, n in enumerate(want):
        pool = np.flatnonzero(eligible & (labels == c))
        if len(pool) < n:
            name = class_names[c] if class_names else str(c)
            raise BaselineDataError(
                f"class {name}: the Hybrid training split has {n} images, but only {len(pool)} CIFAR-10 "
                f"training images of that class are not the source of a validation or test pair")
        picks.append(rng.choice(pool, n, replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def held_out_sources(splits: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
    """Source ids of every validation and test pair."""
    return np.unique(np.concatenate([np.asarray(splits[s]["source_id"], np.int64) for s in ("val", "test")]))


def load_clean_control(raw_dir: str | Path, hybrid_dir: str | Path, seed: int) -> tuple[tuple, tuple, dict]:
    """(train images, labels), (Hybrid validation real images, labels), Hybrid test split.

    The control validates on real images only: it must never see an AE, not even to pick its epoch.
    """
    splits = {s: load_npz(f"{hybrid_dir}/{s}.npz", HYBRID_KEYS) for s in ("train", "val", "test")}
    raw = load_npz(f"{raw_dir}/train.npz", ["images", "labels"])
    idx = clean_control_indices(raw["labels"], splits["train"]["labels"], held_out_sources(splits), seed,
                                list(CLASSES))
    real_val = splits["val"]["is_adv"] == 0
    return ((raw["images"][idx], raw["labels"][idx]),
            (splits["val"]["images"][real_val], splits["val"]["labels"][real_val]), splits["test"])
