"""Every stage's record (its plain JSON output), read into one dict for the report and the summary.

The records are the stages' full outputs: per-check validation results, per-class counts,
per-draw statistics. `evaluation.summary` folds them into the few numbers DVC compares.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import load_json

RECORDS = ["targets", "gan", "adversarial", "hybrid", "validation", "eval_mixed"]
STUDY = {"robustness": "metrics/robustness.json", "robustness_details": "reports/robustness.json",
         "adaptive": "metrics/adaptive.json", "fast_at": "metrics/fast_at.json"}


def read_json(path: str | Path) -> Any:
    return load_json(path, "a stage's record (`dvc repro` writes it)")


def load_records(models: list[str], seed_model: str, extra_seeds: list[int], root: str | Path = ".") -> dict[str, Any]:
    """Records of the paper's pipeline and, where it has run, of the robustness study.

    Under `dvc repro` the study's files always exist (they are deps); run by hand on a pipeline
    stopped before the study, its keys are simply absent and the readers say so.
    """
    root = Path(root)
    r: dict[str, Any] = {k: read_json(root / f"metrics/{k}.json") for k in RECORDS}
    r["train"] = {n: read_json(root / f"metrics/train/{n}.json") for n in models}
    if not (root / STUDY["robustness_details"]).is_file():
        return r
    r |= {k: read_json(root / p) for k, p in STUDY.items()}
    r["baseline"] = {n: read_json(root / f"metrics/baseline/{n}.json") for n in models}
    seed0 = {"model": seed_model, "seed": 0, "defended": r["train"][seed_model],
             "baseline": r["baseline"][seed_model]}
    r["seeds"] = [seed0] + [read_json(root / f"metrics/seeds/s{s}.json") for s in extra_seeds]
    return r
