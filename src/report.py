"""Stage report: reports/results.md, our Tables 1 to 5 beside the paper's."""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import yaml

from advhybrid.evaluation.report import render
from advhybrid.io import save_text

METRICS = ["targets", "gan", "adversarial", "hybrid", "validation", "eval_mixed"]
DATA = ["data/hybrid/train.npz", "data/hybrid/val.npz", "data/hybrid/test.npz"]


def md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/results.md")
    args = ap.parse_args()
    # The report is the one stage that reads every params section: it prints them all.
    params = yaml.safe_load(Path(args.params).read_text())
    m = {k: json.loads(Path(f"metrics/{k}.json").read_text()) for k in METRICS}
    m["train"] = {n: json.loads(Path(f"metrics/train/{n}.json").read_text()) for n in params["train"]["models"]}
    scale = params.get("scale_info", {}).get("name", "reference")
    save_text(args.out, render(m, params, {p: md5(p) for p in DATA}, f"dvc exp run -S scale={scale}"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
