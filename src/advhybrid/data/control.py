"""The same-sources control: the Hybrid training split with every AE replaced by the real image it
was made from.

The question the paper's claim needs answered is "what do the AEs add?". The control that answers
it sees the same sources, as many images, the same number of optimiser steps and the same
augmentation as the defended model; the only thing it lacks is the perturbation. So each source
appears twice per epoch in both trainings: as (real, AE) for the defended model, as (real, real)
for its control, each copy augmented independently.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import load_npz

SPLIT_KEYS = ["images", "labels", "is_adv", "source_id"]


class ControlDataError(ValueError):
    """A Hybrid split whose AEs cannot be matched to their real sources."""


def same_sources(split: dict[str, np.ndarray], where: str = "the Hybrid split") -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of `split` with each AE's pixels replaced by its source's real image.

    Row order, labels and count are the split's own, so a seeded batch order visits the same
    sources in the same places as it does for the defended model.
    """
    adv = np.asarray(split["is_adv"]).astype(bool)
    sid = np.asarray(split["source_id"], np.int64)
    real_rows = np.flatnonzero(~adv)
    order = np.argsort(sid[real_rows], kind="stable")
    real_sorted = sid[real_rows][order]
    if len(np.unique(real_sorted)) != len(real_sorted):
        raise ControlDataError(f"{where}: a source id appears on more than one real image")
    pos = np.searchsorted(real_sorted, sid[adv])
    pos = np.minimum(pos, max(len(real_sorted) - 1, 0))
    if adv.any() and (len(real_sorted) == 0 or not np.array_equal(real_sorted[pos], sid[adv])):
        missing = np.setdiff1d(sid[adv], real_sorted)[:5].tolist()
        raise ControlDataError(f"{where}: AEs whose real source image is not in the split (source ids {missing} ...)")
    images = np.array(split["images"], copy=True)
    images[adv] = split["images"][real_rows[order][pos]]
    labels = np.asarray(split["labels"])
    if adv.any() and not np.array_equal(labels[adv], labels[real_rows[order][pos]]):
        raise ControlDataError(f"{where}: an AE's label differs from its source's")
    return images, labels


def load_control(hybrid_dir: str | Path) -> tuple[tuple, tuple, dict]:
    """(same-sources training images, labels), (Hybrid validation real images, labels), Hybrid test split.

    The control validates on real images only: it must never see an AE, not even to pick its epoch.
    """
    splits = {s: load_npz(f"{hybrid_dir}/{s}.npz", SPLIT_KEYS) for s in ("train", "val", "test")}
    train = same_sources(splits["train"], f"{hybrid_dir}/train.npz")
    real_val = splits["val"]["is_adv"] == 0
    return train, (splits["val"]["images"][real_val], splits["val"]["labels"][real_val]), splits["test"]
