"""Shared fixtures: where the real CIFAR-10 archive is (if anywhere) and tiny synthetic data."""
from __future__ import annotations

import fcntl
import functools
import os
import shlex
import socket
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


# The official archive, downloaded once (md5-checked) into a folder every test run shares.
OFFICIAL_CACHE = Path(os.environ.get("ADVHYBRID_TEST_CACHE", Path.home() / ".cache" / "advhybrid"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, give the stage processes each worker starts its share of
    $ADVHYBRID_THREADS (default: every core). Two 2-thread pipelines side by side on 2 cores ran
    far slower than one after the other: each parallel op waits on a thread the other pipeline
    has descheduled (beside the paper dry run, the smoke pipeline was 15 minutes in and only at
    generate_adversarial, which it reaches in 4 minutes alone). A hook, not import-time code:
    tests/ddp_worker.py imports this module under torchrun and keeps its own environment."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        total = int(os.environ.get("ADVHYBRID_THREADS") or os.cpu_count() or 1)
        os.environ["ADVHYBRID_THREADS"] = str(max(1, total // workers))


# The files that run pipelines through dvc, longest chains first. Under `make test` (pytest-xdist,
# --dist loadfile --no-loadscope-reorder) each worker takes the next file of the collection when
# it runs short, so the smoke pipeline and the paper dry run start at once on the two workers
# (a core each: pytest_configure), the files that need the smoke pipeline follow it, and the
# short unit files fill the tail. xdist's default order (most tests first) put a
# smoke-dependent file on the second worker early, where it waited minutes for the first one's
# pipeline.
HEAVY_FIRST = ("test_pipeline_smoke.py", "test_paper_dry_run.py", "test_experiments.py",
               "test_params_fail_first.py", "test_remote_s3.py", "test_queue.py", "test_publish.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@functools.cache
def _official_archive() -> tuple[Path | None, str]:
    """The official archive in OFFICIAL_CACHE (downloading it if need be), or None and why not."""
    from advhybrid.data.cifar import CifarSourceError, download_official

    if os.environ.get("ADVHYBRID_TEST_DOWNLOAD") == "0":
        return None, "downloading it is turned off by ADVHYBRID_TEST_DOWNLOAD=0"
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine should say so in seconds, not minutes
    try:
        return download_official(OFFICIAL_CACHE), ""
    except CifarSourceError as e:
        return None, str(e)
    finally:
        socket.setdefaulttimeout(timeout)


def cifar_source() -> Path | None:
    """The CIFAR-10 source tests may use: $ADVHYBRID_CIFAR_SOURCE, else ../shared's archive,
    else the official archive (downloaded once into OFFICIAL_CACHE)."""
    env = os.environ.get("ADVHYBRID_CIFAR_SOURCE")
    if env and env != "official" and Path(env).exists():
        return Path(env)
    if SHARED_ARCHIVE.is_file():
        return SHARED_ARCHIVE
    return _official_archive()[0]


@pytest.fixture(scope="session")
def shared_cifar_archive() -> Path:
    src = cifar_source()
    if src is None:
        pytest.skip(
            f"no CIFAR-10 source: $ADVHYBRID_CIFAR_SOURCE is unset, {SHARED_ARCHIVE} is absent, and the "
            f"official archive could not be had ({_official_archive()[1]})"
        )
    return src


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def synthetic_cifar(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent colour blobs: learnable in a few steps, unlike pure noise."""
    g = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    base = g.integers(0, 256, size=(10, 1, 1, 3))
    images = base[labels] + g.normal(0, 20, size=(len(labels), 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


# --- the smoke pipeline, run once per test session through the real `dvc` -----------------

VENV_BIN = Path(sys.executable).parent
MODELS = ["resnet50", "vgg19bn", "shufflenetv2", "repvgg_a2"]
STAGES = ["check_params", "download_cifar", "train_targets", "train_gan", "generate_adversarial", "build_hybrid_splits",
          *(f"train@{m}" for m in MODELS), "eval_mixed",
          *(f"control@{m}" for m in MODELS), "train_fast_at", "seed@1", "eval_robustness", "adaptive_attack",
          "report", "summarize"]


def stage_command(stage: str) -> str:
    """A stage's command as written in dvc.yaml (a foreach stage's `do`, with `${item}` kept)."""
    st = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return (st["do"] if "foreach" in st else st)["cmd"]


def script_args(cmd: str) -> list[str]:
    """What a command passes to its stage script (the words after `src/<stage>.py`)."""
    words = shlex.split(cmd)
    return words[next(i for i, w in enumerate(words) if w.endswith(".py")) + 1:]


def stage_args(stage: str, item: str | None = None) -> list[str]:
    """The arguments dvc.yaml gives a stage's script, paths relative to the repository's root:
    a test that runs a stage in a copy of that layout runs it as `dvc repro` would."""
    cmd = stage_command(stage)
    if "${item}" in cmd and item is None:
        raise ValueError(f"{stage} is a foreach stage: say which item")
    return script_args(cmd.replace("${item}", str(item)))


def assert_lock_lists_every_stage(lock: dict) -> None:
    """Every stage of this scale is in dvc.lock. Entries beyond them may only be foreach items
    this scale does not generate (main's committed lock has the reference scale's seed@2, and
    DVC keeps the lock entry of a foreach item that the params no longer produce)."""
    stages = set(lock["stages"])
    missing = set(STAGES) - stages
    assert not missing, f"stages missing from dvc.lock: {sorted(missing)}"
    extra = stages - set(STAGES)
    assert all("@" in e for e in extra), f"dvc.lock has stages dvc.yaml does not define: {sorted(extra)}"


def pipeline_env() -> dict[str, str]:
    """The environment stage commands need: the venv's python and dvc first on PATH, a git identity."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("ADVHYBRID_THREADS", "2")
    # Spinning OpenMP threads starve each other when two jobs share the cores (a forward pass
    # went from 14 ms to 2.5 s); passive waiting costs nothing when the cores are free.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for k, v in {"GIT_AUTHOR_NAME": "advhybrid-tests", "GIT_AUTHOR_EMAIL": "tests@advhybrid.invalid",
                 "GIT_COMMITTER_NAME": "advhybrid-tests", "GIT_COMMITTER_EMAIL": "tests@advhybrid.invalid"}.items():
        env.setdefault(k, v)
    env.pop("ADVHYBRID_CIFAR_SOURCE", None)  # the source goes in as a params override, as `make smoke` does
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=pipeline_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n"
                             f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def copy_checkout(dest: Path) -> Path:
    """The files a fresh clone would have, plus uncommitted work: tracked and untracked-not-ignored."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "checkout under test"], dest)
    return dest


def smoke_overrides(archive: Path) -> list[str]:
    """The Hydra overrides of the smoke baseline. Hydra recomposes params.yaml from conf/ on
    every `dvc exp run -S`, so later experiments must repeat them or the scale falls back."""
    return ["-S", "scale=smoke", "-S", f"data.source={archive}"]


def isolated_dvc_env(isolated: Path, **extra: str) -> dict[str, str]:
    """pipeline_env() without AWS_* settings or user/system DVC and AWS config (they live in
    `isolated`), and with DVC analytics off: tests must not depend on, or touch, the network."""
    env = {k: v for k, v in pipeline_env().items() if not k.startswith("AWS_")}
    env.update(
        DVC_NO_ANALYTICS="1", DVC_GLOBAL_CONFIG_DIR=str(isolated), DVC_SYSTEM_CONFIG_DIR=str(isolated),
        AWS_CONFIG_FILE=str(isolated / "aws_config"),
        AWS_SHARED_CREDENTIALS_FILE=str(isolated / "aws_credentials"),
    )
    env.update(extra)
    return env


# The distributed path of every training and GAN stage runs end to end in
# tests/test_paper_dry_run.py: the paper's configuration (full-width models, the paper's batch
# sizes) under torchrun with two processes (Gloo), one step a stage. The smoke run trains with
# one process: two single-thread ranks made its train_targets three times slower on 2 cores
# (5.4 min against 1.8: every synchronised BatchNorm layer all-reduces four times a step), which
# put the suite over its 20 minutes. tests/test_ddp.py pins the DDP semantics themselves.
def _build_smoke_repo(root: Path, archive: Path) -> Path:
    copy_checkout(root)
    run(["dvc", "exp", "run", *smoke_overrides(archive)], root, timeout=1500)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "smoke results"], root)
    return root


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory, shared_cifar_archive) -> Path:
    """A temporary git repo in which `dvc exp run -S scale=smoke` ran and its results are committed.

    Under pytest-xdist the workers share one: the first to ask builds it under a lock in the
    run's common temporary folder, the others wait for it (a smoke pipeline is minutes of CPU)."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run_id:
        return _build_smoke_repo(tmp_path_factory.mktemp("smoke") / "repo", shared_cifar_archive)
    shared = tmp_path_factory.getbasetemp().parent / f"smoke-{run_id}"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "built").exists():
            _build_smoke_repo(shared / "repo", shared_cifar_archive)
            (shared / "built").touch()
    return shared / "repo"
