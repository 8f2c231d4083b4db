"""tools/gpu_run.sh on this CPU, through the same background-and-wait path the GPU run takes.

The device tool kills what a command leaves behind unless it runs in its own session, and takes
the machine back 30 s after a call returns; so the script starts `dvc repro` under setsid and
every call waits on it until its own deadline. Here: a first call (`--first`: smoke before the
real run) whose deadline passes at once returns 3 with the smoke run still alive; a second call
picks that run up, sees it pass, starts the main run (here only its first stage) and waits it to
the end (0), with the results packed.

What is tested is the script, not the training: the smoke work folder starts as a rerun on the
same machine finds it (gpu_run.sh keeps outputs and dvc.lock there), holding smoke_repo's
finished pipeline less eval_mixed's outputs, so `dvc repro` reruns eval_mixed and what follows
it and skips the rest. (DVC's run cache cannot stand in: it skips stages that have an uncached
output other than a metric or a plot, as our per-stage records are.)
"""
from __future__ import annotations

import sys
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import isolated_dvc_env

pytestmark = pytest.mark.slow


def gpu_run(root: Path, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "tools/gpu_run.sh", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def checkout(smoke_repo: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("device") / "repo"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=smoke_repo, capture_output=True, text=True,
                            check=True).stdout.split("\0")
    for rel in filter(None, listed):   # what travels: the tree without .git
        if (smoke_repo / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(smoke_repo / rel, root / rel)
    smoke = root / ".gpu" / "smoke"
    smoke.mkdir(parents=True)
    for rel in ["dvc.lock", "data", "models", "metrics", "plots", "reports", "checks"]:
        src = smoke_repo / rel
        (shutil.copy2 if src.is_file() else shutil.copytree)(src, smoke / rel)
    shutil.rmtree(smoke / "plots" / "eval_mixed")
    (smoke / "metrics" / "eval_mixed.json").unlink()
    isolated = tmp_path_factory.mktemp("dvc-global")
    (isolated / "config").write_text(f"[cache]\n    dir = {smoke_repo / '.dvc' / 'cache'}\n")
    env = isolated_dvc_env(isolated, ADVHYBRID_DEVICE="cpu", PYTHON=sys.executable,
                           GPU_ROOT=str(root / ".gpu"), OUT=str(root / "out"), PACK_S="2")
    return root, env


def test_a_second_call_picks_up_the_run_the_first_left_and_finishes_it(checkout, shared_cifar_archive):
    root, env = checkout
    args = ["--first", "scale=smoke", f"data.source={shared_cifar_archive}"]  # smoke_repo's, so its dvc.lock holds
    first = gpu_run(root, {**env, "DEADLINE_S": "3"}, *args)
    assert first.returncode == 3, f"exit {first.returncode}:\n{first.stdout[-3000:]}\n{first.stderr[-2000:]}"
    pid = (root / ".gpu" / "smoke" / "repro.pid").read_text().strip()
    assert Path(f"/proc/{pid}").exists(), "the smoke run did not outlive the call that started it"

    # the main run itself is kept to one stage, restored from the cache the smoke runs filled
    second = gpu_run(root, {**env, "DEADLINE_S": "560", "REPRO_TARGETS": "download_cifar"}, *args)
    log = second.stdout
    assert second.returncode == 0, f"exit {second.returncode}:\n{log[-4000:]}\n{second.stderr[-2000:]}"
    assert "waiting on the smoke run in progress" in log and "smoke passed on this machine" in log
    assert "dvc repro started in" in log and "pipeline complete" in log
    with tarfile.open(root / "out" / "results.tar.gz") as tar:
        names = tar.getnames()
    assert {"dvc.lock", "params.yaml", "overrides.txt"} <= set(names), names
    assert (root / ".gpu" / "smoke" / "reports" / "results.md").is_file(), "the smoke run did not reach its report"
    assert (root / ".gpu" / "smoke" / "metrics" / "eval_mixed.json").is_file(), "the smoke run did not rerun eval_mixed"
    assert "resuming: " in first.stdout, first.stdout


def test_arguments_are_refused_while_a_run_is_in_progress(checkout, tmp_path):
    root, env = checkout
    work = root / ".gpu" / "work"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (work / "repro.pid").write_text(str(sleeper.pid))
        proc = gpu_run(root, {**env, "DEADLINE_S": "5"}, "scale=paper")
        # the script's own output, stderr included, goes through tee to stdout and gpu_run.log
        assert proc.returncode == 1 and "a run is in progress" in proc.stdout, proc.stdout + proc.stderr
    finally:
        sleeper.kill()
