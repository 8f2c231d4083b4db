"""Every stage's record (its plain JSON output), read into one dict for the report and the summary.

The records are the stages' full outputs: per-check validation results, per-class counts,
per-draw statistics. `evaluation.summary` folds them into the few numbers DVC compares. Where
each record lives is said once, in dvc.yaml: the stages that read them take every path as an
argument (`RECORD_PATHS`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..io import load_json

# The stages' records, in the order the report reads them: one JSON file each, or a folder of
# them. The pipeline's come first; the robustness study's exist once it has run.
PIPELINE_FILES = ("targets", "gan", "adversarial", "hybrid", "validation", "eval_mixed")
STUDY_FILES = ("robustness", "robustness_details", "adaptive", "fast_at")
FOLDERS = {"train": "<model>.json", "control": "<model>.json", "seeds": "s<seed>.json"}

# the record options of the stages that read them all (params.stage_parser's `paths`;
# "eval_mixed" is `--eval-mixed PATH`)
RECORD_PATHS = {**{name: f"the record of {name} (JSON)" for name in PIPELINE_FILES + STUDY_FILES},
                **{name: f"the records of {name}: a folder of {files}" for name, files in FOLDERS.items()}}


def read_json(path: str | Path) -> Any:
    return load_json(path, "a stage's record (`dvc repro` writes it)")


def load_records(paths: Mapping[str, str | os.PathLike], models: list[str], seed_model: str,
                 extra_seeds: list[int]) -> dict[str, Any]:
    """Records of the paper's pipeline and, where it has run, of the robustness study.

    `paths` gives every name of RECORD_PATHS its file or folder (other entries are ignored, so
    a stage passes `vars(args)`). Under `dvc repro` the study's files always exist (they are
    deps); run by hand on a pipeline stopped before the study, its keys are simply absent and
    the readers say so.
    """
    p = {k: Path(paths[k]) for k in RECORD_PATHS}
    r: dict[str, Any] = {k: read_json(p[k]) for k in PIPELINE_FILES}
    r["train"] = {n: read_json(p["train"] / f"{n}.json") for n in models}
    if not p["robustness_details"].is_file():
        return r
    r |= {k: read_json(p[k]) for k in STUDY_FILES}
    r["control"] = {n: read_json(p["control"] / f"{n}.json") for n in models}
    seed0 = {"model": seed_model, "seed": 0, "defended": r["train"][seed_model],
             "control": r["control"][seed_model]}
    r["seeds"] = [seed0] + [read_json(p["seeds"] / f"s{s}.json") for s in extra_seeds]
    return r
