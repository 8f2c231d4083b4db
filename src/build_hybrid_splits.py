"""Stage build_hybrid_splits: Hybrid CIFAR-10 (IV-A, Table 1) from real images and their AEs.

Pairs every adversarial image with the real image it was made from (one AE per source),
splits the pairs per class by source into train/val/test, runs the Great Expectations suite,
and only when every check passes publishes, as one set (advhybrid.publish: after a crash, the
old set or the new one): data/hybrid/{train,val,test}.npz, metrics/hybrid.json,
metrics/validation.json, plots/hybrid/counts.csv and the Data Docs under reports/validation/.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from advhybrid.data.hybrid import (
    ADV_KEYS, RAW_SPLITS, SPLITS, build_hybrid, count_table, hybrid_metrics, resolve_train_cap,
)
from advhybrid.data.validation import Expectations, validate_hybrid
from advhybrid.io import csv_text, json_text, load_npz
from advhybrid.params import RECORD, ParamsError, load_section, stage_parser
from advhybrid.publish import output_set


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


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, raw_doc=True, paths={
        "raw": "CIFAR-10 folder: {train,test}.npz", "adversarial": "the AEs: <target>.npz", "out": "output folder: {train,val,test}.npz",
        "metrics": RECORD, "validation_metrics": "output: the suite's results (JSON)",
        "plots": "output plot: images per class (CSV)", "report": "output folder: Great Expectations Data Docs"})
    args = ap.parse_args(argv)

    p = read_params(args.params)
    t0 = time.perf_counter()
    # Entered first: it completes (or drops) what a killed earlier run left half-published, and
    # every output is staged outside the declared ones until all of them are ready.
    with output_set("build_hybrid_splits", files=[args.metrics, args.validation_metrics, args.plots],
                    dirs=[args.out, args.report]) as staged:
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
        report = validate_hybrid(splits, expect, docs_dir=staged[args.report])
        report.raise_for_failures()
        for s in SPLITS:
            with open(staged[args.out] / f"{s}.npz", "wb") as f:
                np.savez(f, **splits[s])
        staged[args.metrics].write_text(json_text(metrics))
        staged[args.validation_metrics].write_text(json_text(report.to_json()))
        staged[args.plots].write_text(csv_text(count_table(splits, class_names), args.plots))

    for s in SPLITS:
        per = metrics["splits"][s]
        print(f"{args.out / s}.npz: {per['real']} real + {per['adversarial']} adversarial; per class "
              f"{[v['adversarial'] for v in per['per_class'].values()]}")
    print(f"validation: {len(report.checks)} checks passed; Data Docs in {args.report}/index.html; "
          f"{time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
