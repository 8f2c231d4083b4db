"""`dvc exp run` with a bad `-S` value stops at check_params and leaves every output as it was.

DVC removes a stage's outputs right before running it; before check_params, `-S train.lr=abc`
cost models/defended/*.pt and their metrics, `-S data.source=<typo>` the CIFAR-10 arrays. Run
on a copy of the committed smoke pipeline (the session's smoke_repo), so only DVC's start-up
and the check itself run: seconds per case.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import run, smoke_overrides

pytestmark = pytest.mark.slow

OUTPUT_ROOTS = ["data", "models", "metrics", "plots", "reports", "checks", "dvc.lock"]


def snapshot(repo: Path) -> dict[str, str]:
    """sha256 of every file the pipeline wrote (and of dvc.lock), by path."""
    files = []
    for root in OUTPUT_ROOTS:
        p = repo / root
        files += [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    return {f.relative_to(repo).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def copied_smoke(smoke_repo: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    repo = tmp_path_factory.mktemp("fail-first") / "repo"
    subprocess.run(["cp", "-a", str(smoke_repo), str(repo)], check=True)
    before = snapshot(repo)
    assert any(k.startswith("models/defended/") for k in before) and "data/raw/cifar10/train.npz" in before
    return repo, before


# (overrides after the smoke ones, what the failure must name)
CASES = {
    "lr-not-a-number": (["-S", "train.lr=abc"], "'train.lr'='abc'"),
    "negative-epochs": (["-S", "train.epochs.resnet50=-1"], "'train.epochs' must be >= 1"),
    "unknown-target": (["-S", "targets.models=[resnet56,nosuchnet]"], "'targets.models.1'='nosuchnet'"),
    "empty-models": (["-S", "train.models=[]"], "train.models"),
    "source-typo": (["-S", "data.source=../shared/data/cifar10-jpge.tar.gz"], "'data.source'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exp_run_with_a_bad_value_leaves_every_output_byte_identical(copied_smoke, shared_cifar_archive, case):
    repo, before = copied_smoke
    extra, named = CASES[case]
    overrides = ["-S", "scale=smoke"] if case == "source-typo" else smoke_overrides(shared_cifar_archive)
    proc = run(["dvc", "exp", "run", *overrides, *extra], repo, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"dvc exp run accepted {extra}:\n{out[-3000:]}"
    assert named in out, f"the failure does not name {named!r}:\n{out[-3000:]}"
    after = snapshot(repo)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"dvc exp run {extra} changed or removed outputs: {changed}"


def test_one_models_epochs_make_only_its_own_training_stages_stale(copied_smoke):
    repo, _ = copied_smoke
    committed = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=repo, capture_output=True, text=True,
                               check=True).stdout
    params = yaml.safe_load(committed)
    params["train"]["epochs"]["vgg19bn"] += 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        stale = set(json.loads(run(["dvc", "status", "--json"], repo).stdout))
    finally:
        (repo / "params.yaml").write_text(committed)
    assert {"check_params", "train@vgg19bn", "control@vgg19bn"} <= stale, stale
    assert not {"train@resnet50", "control@resnet50", "train_fast_at", "seed@1"} & stale, stale
