"""The pull-request workflow (.github/workflows/pr-report.yml) cannot run here, so its steps are
pinned to commands the suite does run: a new step without a test fails this file."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from conftest import REPO, smoke_overrides

WORKFLOW = REPO / ".github" / "workflows" / "pr-report.yml"

# each step's command, and where the suite exercises it
EXERCISED = {
    "make venv": ".ci/run (make test builds the venv first)",
    ".venv/bin/dvc pull -r s3": "tests/test_remote_s3.py",
    "make $SCALE": "test_make_smoke_is_the_smoke_experiment_the_tests_run",
    ".venv/bin/python tools/compare.py origin/main workspace -o reports/compare.md":
        "tests/test_experiments.py::test_compare_*",
    'cml comment update --target=pr --watermark-title="advhybrid compare" reports/compare.md':
        "CML's own command (posts reports/compare.md; needs a pull request)",
}


def make_n(*args: str, **env: str) -> str:
    return subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", **env}).stdout


def test_every_workflow_step_runs_a_command_the_suite_exercises():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["report"]["steps"]
    commands = [s["run"].strip() for s in steps if "run" in s]
    unknown = [c for c in commands if c not in EXERCISED]
    assert not unknown, f"{WORKFLOW}: steps no test exercises: {unknown}"
    assert len(commands) == len(EXERCISED)


def test_make_smoke_is_the_smoke_experiment_the_tests_run(tmp_path):
    archive = tmp_path / "cifar.tar.gz"
    archive.touch()
    out = make_n("smoke", ADVHYBRID_CIFAR_SOURCE=str(archive))
    assert f"dvc exp run {' '.join(smoke_overrides(archive))}" in out, out


def test_make_compare_passes_old_and_new_to_the_tool():
    out = make_n("compare", "OLD=v1", "NEW=lr-2e-3")
    assert "tools/compare.py v1 lr-2e-3 -o reports/compare.md" in out, out
    assert "tools/compare.py main workspace" in make_n("compare")
