"""tools/same_outputs.py: the check behind `dvc commit` after a refactor sets wall time aside, nothing else."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import same_outputs  # noqa: E402


def run_repo(root: Path, acc: float, minutes: float, weights: bytes) -> Path:
    (root / "metrics").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "metrics/train.json").write_text(json.dumps({"acc": acc, "minutes": minutes}))
    (root / "plots.csv").write_text(f"epoch,val_acc,seconds\n1,{acc},{minutes * 60}\n")
    (root / "models/m.pt").write_bytes(weights)
    lock = {"stages": {"train": {"outs": [{"path": p, "md5": "x"} for p in ("metrics/train.json", "plots.csv", "models")]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    return root


def test_runs_that_differ_only_in_wall_time_are_the_same(tmp_path):
    old = run_repo(tmp_path / "old", 0.5, 3.1, b"w")
    new = run_repo(tmp_path / "new", 0.5, 4.7, b"w")
    r = same_outputs.compare(old, new, set())
    assert r["changed"] == [] and len(r["same"]) == 3


def test_a_changed_figure_or_weight_is_reported_and_fails_the_check(tmp_path):
    old = run_repo(tmp_path / "old", 0.5, 3.1, b"w")
    new = run_repo(tmp_path / "new", 0.6, 3.1, b"v")
    r = same_outputs.compare(old, new, set())
    assert r["changed"] == ["metrics/train.json", "models/m.pt", "plots.csv"]
    assert same_outputs.main([str(old), str(new)]) == 1
