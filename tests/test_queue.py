"""The README's queue recipe on the real pipeline: experiments queued with the Makefile's offline
source (a path relative to the repository, beside it) and run by `dvc queue start -j 2`.

A queued experiment runs in a copy of the repository under .dvc/tmp/exps/, where
`../shared/...` would lead nowhere; the pipeline reads a relative source from the repository the
experiment was queued from. Only the stages up to download_cifar run: that is where the source
is read, and the rest of the DAG is the same whether queued or not.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import copy_checkout, isolated_dvc_env

pytestmark = pytest.mark.slow


def _dvc(repo: Path, env: dict[str, str], *args: str, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"dvc {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_two_queued_smoke_experiments_with_a_relative_source_both_succeed(shared_cifar_archive, tmp_path):
    work = tmp_path / "work"
    repo = copy_checkout(work / "repo")
    # The Makefile's layout: the archive in ../shared/data/ beside the clone, named as it is.
    beside = work / "shared" / "data" / shared_cifar_archive.name
    beside.parent.mkdir(parents=True)
    os.symlink(shared_cifar_archive.resolve(), beside)
    source = f"../shared/data/{shared_cifar_archive.name}"
    env = isolated_dvc_env(tmp_path / "isolated")
    (tmp_path / "isolated").mkdir()

    for name, lr in (("q-a", "0.001"), ("q-b", "0.002")):
        _dvc(repo, env, "exp", "run", "--queue", "-n", name, "-S", "scale=smoke", "-S", f"data.source={source}",
             "-S", f"train.lr={lr}", "download_cifar")
    with open(tmp_path / "queue.log", "w") as log:   # the workers outlive this call: no pipes
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=repo, env=env,
                       stdout=log, stderr=log, timeout=60, check=True)

    deadline, status = time.monotonic() + 600, ""
    while time.monotonic() < deadline:
        status = _dvc(repo, env, "queue", "status")
        if status.count("Success") + status.count("Failed") >= 2:
            break
        time.sleep(2)
    logs = {name: _dvc(repo, env, "queue", "logs", name) for name in ("q-a", "q-b") if "Failed" in status}
    assert status.count("Success") == 2, f"both queued experiments must succeed:\n{status}\n{logs}"
    # Each ran from the queuing repository's archive, and params.yaml kept the relative path.
    exps = _dvc(repo, env, "exp", "show", "--csv")
    assert exps.count(source) >= 2, exps
