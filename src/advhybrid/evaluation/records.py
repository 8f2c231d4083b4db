"""Every stage's record (its plain JSON output), read into one dict for the report and the summary.

The records are the stages' full outputs: per-check validation results, per-class counts,
per-draw statistics. `evaluation.summary` folds them into the few numbers DVC compares. Where
each record lives is said once, in dvc.yaml: the stages that read them take every path as an
argument (`RECORD_PATHS`).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..io import load_json

# record name -> what the path names; `--eval-mixed` for "eval_mixed"
PIPELINE = {"targets": "file", "gan": "file", "adversarial": "file", "hybrid": "file",
            "validation": "file", "eval_mixed": "file", "train": "folder of <model>.json"}
STUDY = {"robustness": "file", "robustness_details": "file", "adaptive": "file", "fast_at": "file",
         "baseline": "folder of <model>.json", "seeds": "folder of s<seed>.json"}


# the record options of the stages that read them all (params.stage_parser's `paths`)
RECORD_PATHS = {name: f"{name}'s record ({kind})" for name, kind in (PIPELINE | STUDY).items()}


def read_json(path: str | Path) -> Any:
    return load_json(path, "a stage's record (`dvc repro` writes it)")


def load_records(paths: argparse.Namespace | dict[str, Path], models: list[str], seed_model: str,
                 extra_seeds: list[int]) -> dict[str, Any]:
    """Records of the paper's pipeline and, where it has run, of the robustness study.

    `paths` (a stage's parsed arguments, or a dict) gives each record name of PIPELINE and STUDY
    its file or folder; other entries are ignored. Under `dvc repro`
    the study's files always exist (they are deps); run by hand on a pipeline stopped before the
    study, its keys are simply absent and the readers say so.
    """
    given = vars(paths) if isinstance(paths, argparse.Namespace) else paths
    p = {k: Path(given[k]) for k in PIPELINE | STUDY}
    r: dict[str, Any] = {k: read_json(p[k]) for k, kind in PIPELINE.items() if kind == "file"}
    r["train"] = {n: read_json(p["train"] / f"{n}.json") for n in models}
    if not p["robustness_details"].is_file():
        return r
    r |= {k: read_json(p[k]) for k, kind in STUDY.items() if kind == "file"}
    r["baseline"] = {n: read_json(p["baseline"] / f"{n}.json") for n in models}
    seed0 = {"model": seed_model, "seed": 0, "defended": r["train"][seed_model],
             "baseline": r["baseline"][seed_model]}
    r["seeds"] = [seed0] + [read_json(p["seeds"] / f"s{s}.json") for s in extra_seeds]
    return r
