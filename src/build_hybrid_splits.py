"""Stage build_hybrid_splits: Hybrid CIFAR-10 (IV-A, Table 1) from real images and their AEs.

Pairs every adversarial image with the real image it was made from (one AE per source),
splits the pairs per class by source into train/val/test, runs the Great Expectations suite,
and only when every check passes writes, all together:
data/hybrid/{train,val,test}.npz, metrics/hybrid.json, metrics/validation.json,
plots/hybrid/counts.csv and the Data Docs under reports/validation/.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from advhybrid.data.hybrid import (
    ADV_KEYS, RAW_SPLITS, SPLITS, build_hybrid, count_table, resolve_train_cap,
)
from advhybrid.data.validation import Expectations, validate_hybrid
from advhybrid.io import atomic_dir, atomic_path, load_npz
from advhybrid.params import ParamsError, load_section


def read_params(path: str | Path) -> dict:
    p = load_section("hybrid", path)
    out = {
        "targets": p.names("targets"),
        "val_per_class": p.typed("val_per_class", int),
        "test_per_class": p.typed("test_per_class", int),
        "train_cap_per_class": p["train_cap_per_class"],
        "seed": p.typed("seed", int),
        "balance_tolerance": p.typed("balance_tolerance", float),
        "max_linf": p.typed("max_linf", float),
        "min_ssim": p.typed("min_ssim", float),
        "ssim_tolerance": p.typed("ssim_tolerance", float),
    }
    for key in ("val_per_class", "test_per_class"):
        if out[key] < 1:
            raise ParamsError(f"{path}: 'hybrid.{key}' must be >= 1, got {out[key]}")
    if isinstance(out["train_cap_per_class"], dict):
        out["train_cap_per_class"] = dict(out["train_cap_per_class"])
    return out


def hybrid_metrics(splits: dict, summary: dict, targets: list[str], class_names: list[str]) -> dict:
    """Counts per split and class (Table 1), totals, and how many AEs each target gave."""
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", default="data/raw/cifar10", type=Path)
    ap.add_argument("--adversarial", default="data/adversarial", type=Path)
    ap.add_argument("--out", default="data/hybrid", type=Path)
    ap.add_argument("--metrics", default="metrics/hybrid.json", type=Path)
    ap.add_argument("--validation-metrics", default="metrics/validation.json", type=Path)
    ap.add_argument("--plots", default="plots/hybrid/counts.csv", type=Path)
    ap.add_argument("--report", default="reports/validation", type=Path)
    args = ap.parse_args(argv)

    p = read_params(args.params)
    t0 = time.perf_counter()
    raw = {s: load_npz(args.raw / f"{s}.npz", required=["images", "labels", "classes"])
           for s in RAW_SPLITS}
    adversarial = {t: load_npz(args.adversarial / f"{t}.npz", required=ADV_KEYS)
                   for t in tqdm(p["targets"], desc="load adversarial")}
    splits, summary = build_hybrid(raw, adversarial, p["targets"], p["val_per_class"],
                                   p["test_per_class"], p["train_cap_per_class"], p["seed"])
    del adversarial
    class_names = [str(c) for c in raw["train"]["classes"]]
    expect = Expectations(
        class_names=class_names, n_targets=len(p["targets"]), val_per_class=p["val_per_class"],
        test_per_class=p["test_per_class"],
        train_cap=resolve_train_cap(p["train_cap_per_class"], class_names),
        max_linf=p["max_linf"], min_ssim=p["min_ssim"], ssim_tolerance=p["ssim_tolerance"],
        balance_tolerance=p["balance_tolerance"],
    )
    metrics = hybrid_metrics(splits, summary, p["targets"], class_names)

    # Every output goes to a temporary file first; the renames happen only when the with-block
    # ends without error, so a failed check or a crash leaves all previous outputs untouched.
    with contextlib.ExitStack() as stack:
        docs = stack.enter_context(atomic_dir(args.report))
        report = validate_hybrid(splits, expect, docs_dir=docs)
        report.raise_for_failures()
        tmp = {path: stack.enter_context(atomic_path(path, suffix=path.suffix))
               for path in [*(args.out / f"{s}.npz" for s in SPLITS), args.metrics,
                            args.validation_metrics, args.plots]}
        for s in SPLITS:
            with open(tmp[args.out / f"{s}.npz"], "wb") as f:
                np.savez(f, **splits[s])
        _write_json(tmp[args.metrics], metrics)
        _write_json(tmp[args.validation_metrics], report.to_json())
        _write_csv(tmp[args.plots], count_table(splits, class_names))

    for s in SPLITS:
        per = metrics["splits"][s]
        print(f"{args.out / s}.npz: {per['real']} real + {per['adversarial']} adversarial; per class "
              f"{[v['adversarial'] for v in per['per_class'].values()]}")
    print(f"validation: {len(report.checks)} checks passed; Data Docs in {args.report}/index.html; "
          f"{time.perf_counter() - t0:.1f}s")


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols = list(rows[0])
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
