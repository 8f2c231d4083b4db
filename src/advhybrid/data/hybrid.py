"""Hybrid CIFAR-10 (IV-A, Table 1): (real, adversarial) pairs split by source image.

Every stored adversarial example (AE) was made from one real CIFAR-10 image, its *source*.
A source may have AEs from several target models; we keep ONE of them per source, chosen at
random (seeded), so every selected source contributes exactly one real and one adversarial
image. That makes real and adversarial counts equal per class by construction, as in the
paper (79,249 real + 79,249 AEs, and equal columns in Table 1), and it is what lets us split
by source: a pair never straddles two splits, so neither a source nor an image made from it
can leak from training into validation or test.

Split per class, as Table 1 does: ``val_per_class`` and ``test_per_class`` pairs per class,
training gets the rest (optionally capped per class). The class of a pair is the true label.

Source ids: ``source_id = source_split * SOURCE_STRIDE + source_index`` with source_split
0 = CIFAR-10 train, 1 = test and SOURCE_STRIDE = 50,000 (the train size), i.e. the row of the
source in train followed by test: train ids 0..49,999, test ids 50,000..59,999. The id is
stable whatever subset of sources the attack stage kept, and decodes back with divmod.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from advhybrid.io import ContractError, check_images

SPLITS: tuple[str, ...] = ("train", "val", "test")
SOURCE_STRIDE = 50_000
RAW_SPLITS: tuple[str, ...] = ("train", "test")  # source_split 0 and 1
ADV_KEYS = ("images", "labels", "source_split", "source_index", "k", "linf", "ssim")
HYBRID_KEYS = ("images", "labels", "is_adv", "source_id", "target_model", "k")


class HybridDataError(ValueError):
    """The inputs cannot make the Hybrid CIFAR-10 splits the params ask for."""


def make_source_id(source_split: np.ndarray, source_index: np.ndarray) -> np.ndarray:
    return np.asarray(source_split, np.int64) * SOURCE_STRIDE + np.asarray(source_index, np.int64)


@dataclass
class AdversarialPool:
    """Metadata of every stored AE of every target; the AE is row `row` of target `target`'s
    file (pixels stay in the files until chosen, so memory holds them once, not twice)."""

    target: np.ndarray
    row: np.ndarray
    labels: np.ndarray
    source_id: np.ndarray
    k: np.ndarray
    linf: np.ndarray
    ssim: np.ndarray

    def take(self, idx: np.ndarray) -> "AdversarialPool":
        return AdversarialPool(**{f: getattr(self, f)[idx] for f in self.__dataclass_fields__})


def pool_adversarial(
    files: Mapping[str, Mapping[str, np.ndarray]],
    targets: Sequence[str],
    raw_labels: Mapping[str, np.ndarray],
) -> AdversarialPool:
    """Concatenate the per-target AE files, checking each against the raw sources it names.

    files: target name -> arrays of data/adversarial/<target>.npz (the key doubles as the
    name used in error messages). raw_labels: "train"/"test" -> labels of the raw split.
    """
    parts = []
    for t, name in enumerate(targets):
        if name not in files:
            raise HybridDataError(f"no adversarial file for target '{name}' (have {sorted(files)})")
        a = files[name]
        missing = [key for key in ADV_KEYS if key not in a]
        if missing:
            raise ContractError(f"adversarial/{name}: missing array(s) {missing}; found {sorted(a)}")
        check_images(f"adversarial/{name}", a["images"])
        n = len(a["images"])
        bad_len = {key: len(a[key]) for key in ADV_KEYS if len(a[key]) != n}
        if bad_len:
            raise ContractError(f"adversarial/{name}: {n} images but lengths {bad_len}")
        split, index = np.asarray(a["source_split"]), np.asarray(a["source_index"], np.int64)
        if n and not np.isin(split, (0, 1)).all():
            raise ContractError(f"adversarial/{name}: source_split must be 0 (train) or 1 (test), "
                                f"got values {np.unique(split).tolist()}")
        labels = np.asarray(a["labels"], np.int64)
        for s, raw_split in enumerate(RAW_SPLITS):
            rows = split == s
            size = len(raw_labels[raw_split])
            idx = index[rows]
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise ContractError(f"adversarial/{name}: source_index out of range for raw "
                                    f"{raw_split} ({size} images): min {idx.min()}, max {idx.max()}")
            wrong = labels[rows] != raw_labels[raw_split][idx]
            if wrong.any():
                raise ContractError(f"adversarial/{name}: {int(wrong.sum())} AE label(s) differ from "
                                    f"their source's true label in raw {raw_split} (labels must be "
                                    f"the true class)")
        parts.append(AdversarialPool(
            target=np.full(n, t, np.int8), row=np.arange(n), labels=labels,
            source_id=make_source_id(split, index), k=np.asarray(a["k"], np.float32),
            linf=np.asarray(a["linf"], np.float32), ssim=np.asarray(a["ssim"], np.float32),
        ))
    return AdversarialPool(**{
        f: np.concatenate([getattr(p, f) for p in parts]) for f in AdversarialPool.__dataclass_fields__
    })


def adversarial_images(files: Mapping[str, Mapping[str, np.ndarray]], targets: Sequence[str],
                       pool: AdversarialPool) -> np.ndarray:
    """The pixels of the pool's AEs, read from their targets' files."""
    out = np.empty((len(pool.row), 32, 32, 3), np.uint8)
    for t, name in enumerate(targets):
        sel = pool.target == t
        out[sel] = files[name]["images"][pool.row[sel]]
    return out


def pick_one_per_source(source_id: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices choosing one AE uniformly at random among each source's AEs, sorted by source.

    Shuffling, then keeping each source's first occurrence, is a uniform choice per source.
    """
    perm = rng.permutation(len(source_id))
    _, first = np.unique(source_id[perm], return_index=True)
    return perm[first]


def split_by_class(
    labels: np.ndarray,
    class_names: Sequence[str],
    val_per_class: int,
    test_per_class: int,
    train_cap: Sequence[int | None],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Indices of pairs per split: val/test take exactly their count of each class, train the
    rest up to its cap. Raises HybridDataError naming every class that falls short."""
    need = val_per_class + test_per_class + 1  # at least one training pair per class
    counts = np.bincount(labels, minlength=len(class_names))
    short = [f"class {c} '{class_names[c]}' has {counts[c]}" for c in range(len(class_names))
             if counts[c] < need]
    if short:
        raise HybridDataError(
            f"too few (real, adversarial) pairs: val_per_class {val_per_class} + test_per_class "
            f"{test_per_class} + at least 1 for training = {need} per class needed, but "
            + "; ".join(short) + f" (pairs per class available: {counts.tolist()})"
        )
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(len(class_names)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out["val"].append(idx[:val_per_class])
        out["test"].append(idx[val_per_class:need - 1])
        out["train"].append(idx[need - 1:][: train_cap[c]])
    return {s: np.concatenate(v) for s, v in out.items()}


def assemble_split(
    pool: AdversarialPool,
    adv_images: np.ndarray,
    raw_images: Mapping[str, np.ndarray],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Arrays of one split from its chosen AEs: each AE plus its source, shuffled together."""
    n = len(pool.labels)
    split, index = np.divmod(pool.source_id, SOURCE_STRIDE)
    real = np.empty_like(adv_images)
    for s, raw_split in enumerate(RAW_SPLITS):
        rows = split == s
        real[rows] = raw_images[raw_split][index[rows]]
    real_and_adv = {  # real rows first, then AEs; shuffled together below
        "images": (real, adv_images),
        "labels": (pool.labels, pool.labels),
        "is_adv": (np.zeros(n, np.uint8), np.ones(n, np.uint8)),
        "source_id": (pool.source_id, pool.source_id),
        "target_model": (np.full(n, -1, np.int8), pool.target),
        "k": (np.zeros(n, np.float32), pool.k),
        # distance of each image to its source: 0 and 1 for the real image itself
        "linf": (np.zeros(n, np.float32), pool.linf),
        "ssim": (np.ones(n, np.float32), pool.ssim),
    }
    perm = rng.permutation(2 * n)
    return {key: np.concatenate(pair)[perm] for key, pair in real_and_adv.items()}


def resolve_train_cap(
    cap: int | Mapping[str, int] | None, class_names: Sequence[str]
) -> list[int | None]:
    """Per-class training cap from params: null (no cap), one int, or {class name: int}."""
    if cap is None or (isinstance(cap, int) and not isinstance(cap, bool)):
        if cap is not None and cap < 1:
            raise HybridDataError(f"train_cap_per_class must be >= 1 or null, got {cap}")
        return [cap] * len(class_names)
    if isinstance(cap, Mapping):
        unknown = sorted(set(cap) - set(class_names))
        missing = [c for c in class_names if c not in cap]
        if unknown or missing:
            raise HybridDataError(f"train_cap_per_class: class names must be exactly "
                                  f"{list(class_names)}; unknown {unknown}, missing {missing}")
        bad = {c: v for c, v in cap.items() if v is not None and (not isinstance(v, int) or v < 1)}
        if bad:
            raise HybridDataError(f"train_cap_per_class: caps must be ints >= 1 or null, got {bad}")
        return [cap[c] for c in class_names]
    raise HybridDataError(f"train_cap_per_class must be null, an int or {{class: int}}, got {cap!r}")


def build_hybrid(
    raw: Mapping[str, Mapping[str, np.ndarray]],
    adversarial: Mapping[str, Mapping[str, np.ndarray]],
    targets: Sequence[str],
    val_per_class: int,
    test_per_class: int,
    train_cap_per_class: int | Mapping[str, int] | None,
    seed: int,
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """The three Hybrid CIFAR-10 splits and a summary of the selection (for metrics).

    raw: "train"/"test" -> {images, labels, classes}; adversarial: target -> its npz arrays.
    """
    class_names = [str(c) for c in raw["train"]["classes"]]
    if len(raw["train"]["images"]) > SOURCE_STRIDE:
        raise ContractError(f"raw/train: {len(raw['train']['images'])} images; source ids assume "
                            f"at most {SOURCE_STRIDE} (CIFAR-10's train size)")
    for s in RAW_SPLITS:
        check_images(f"raw/{s}", raw[s]["images"])
        labels = np.asarray(raw[s]["labels"])
        if len(labels) != len(raw[s]["images"]) or (labels.size and not (
                labels.min() >= 0 and labels.max() < len(class_names))):
            raise ContractError(f"raw/{s}: labels must be one per image in 0..{len(class_names) - 1}, "
                                f"got {len(labels)} labels in [{labels.min(initial=0)}, "
                                f"{labels.max(initial=0)}] for {len(raw[s]['images'])} images")
    pool = pool_adversarial(adversarial, targets, {s: raw[s]["labels"] for s in RAW_SPLITS})
    # independent streams, so changing e.g. the split sizes does not change which AEs are picked
    pick_rng, split_rng, *shuffle_rngs = (np.random.default_rng([seed, i])
                                          for i in range(2 + len(SPLITS)))
    chosen = pool.take(pick_one_per_source(pool.source_id, pick_rng))
    parts = split_by_class(chosen.labels, class_names, val_per_class, test_per_class,
                           resolve_train_cap(train_cap_per_class, class_names), split_rng)
    raw_images = {s: raw[s]["images"] for s in RAW_SPLITS}
    meta = {"target_names": np.array(list(targets)), "classes": np.array(class_names)}
    splits = {}
    for s, rng in zip(SPLITS, shuffle_rngs):
        part = chosen.take(np.sort(parts[s]))
        adv_images = adversarial_images(adversarial, targets, part)
        splits[s] = {**assemble_split(part, adv_images, raw_images, rng), **meta}
    summary = {
        "pool_adversarial": int(len(pool.labels)),
        "pool_sources": int(len(chosen.labels)),
        "per_target_available": np.bincount(pool.target, minlength=len(targets)).tolist(),
    }
    return splits, summary


def count_table(
    splits: Mapping[str, Mapping[str, np.ndarray]], class_names: Sequence[str]
) -> list[dict]:
    """Rows (split, class, kind, count) for every split, class and kind, zeros included."""
    rows = []
    for s, a in splits.items():
        for kind, flag in (("real", 0), ("adversarial", 1)):
            counts = np.bincount(a["labels"][a["is_adv"] == flag], minlength=len(class_names))
            rows += [{"split": s, "class": class_names[c], "kind": kind, "count": int(counts[c])}
                     for c in range(len(class_names))]
    return rows


def hybrid_metrics(splits: Mapping[str, Mapping[str, np.ndarray]], summary: Mapping,
                   targets: Sequence[str], class_names: Sequence[str]) -> dict:
    """metrics/hybrid.json: counts per split and class (Table 1), totals, and how many AEs each
    target gave."""
    per_split = {}
    for s, a in splits.items():
        real, adv = (np.bincount(a["labels"][a["is_adv"] == f], minlength=len(class_names))
                     for f in (0, 1))
        per_split[s] = {"real": int(real.sum()), "adversarial": int(adv.sum()), "per_class": {
            c: {"real": int(real[i]), "adversarial": int(adv[i])} for i, c in enumerate(class_names)}}
    per_target = {t: {"available": summary["per_target_available"][i]} for i, t in enumerate(targets)}
    for s, a in splits.items():
        picked = np.bincount(a["target_model"][a["is_adv"] == 1], minlength=len(targets))
        for i, t in enumerate(targets):
            per_target[t][s] = int(picked[i])
    real = sum(v["real"] for v in per_split.values())
    adv = sum(v["adversarial"] for v in per_split.values())
    return {
        "total": {"real": real, "adversarial": adv, "images": real + adv},
        # sources with at least one AE; those not in any split were left out by train_cap_per_class
        "pool": {"adversarial_images": summary["pool_adversarial"], "sources": summary["pool_sources"],
                 "sources_unused": summary["pool_sources"] - real},
        "splits": per_split,
        "per_target": per_target,
    }
