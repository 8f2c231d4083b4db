"""A stage's outputs are published as a set (advhybrid.publish): a SIGKILL at any point leaves
the old set or, once the journal is written, the new one after the next start; never a mix,
and never a temporary file inside a declared output."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from advhybrid.publish import FAULT_ENV, output_set, staging_dir
from conftest import REPO
from test_hybrid import make_inputs, stage_args, write_params

WRITER = """
import sys
from pathlib import Path
from advhybrid.publish import output_set
root, tag = Path(sys.argv[1]), sys.argv[2]
with output_set("t", files=[root / "m" / "a.json"], dirs=[root / "d"]) as staged:
    staged[root / "m" / "a.json"].write_text(tag)
    for s in ("train", "test"):
        (staged[root / "d"] / f"{s}.npz").write_text(tag + s)
"""


def write_set(root: Path, tag: str, fault: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV} | ({FAULT_ENV: fault} if fault else {})
    return subprocess.run([sys.executable, "-c", WRITER, str(root), tag], env=env, timeout=60).returncode


def contents(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).parts[0].startswith(".publish")}


def test_a_kill_before_the_journal_leaves_the_old_set_and_nothing_inside_the_outputs(tmp_path):
    assert write_set(tmp_path, "old") == 0
    old = contents(tmp_path)
    assert write_set(tmp_path, "new", fault="before_journal") == -signal.SIGKILL
    assert contents(tmp_path) == old  # no temporary file beside the outputs either
    assert write_set(tmp_path, "new") == 0 and contents(tmp_path) == {
        "m/a.json": "new", "d/train.npz": "newtrain", "d/test.npz": "newtest"}
    assert not staging_dir("t", [tmp_path / "d"]).exists()


def test_a_kill_during_the_renames_is_finished_by_the_next_start(tmp_path):
    assert write_set(tmp_path, "old") == 0
    assert write_set(tmp_path, "new", fault="after_first_rename") == -signal.SIGKILL
    with pytest.raises(RuntimeError, match="the next run fails"):
        with output_set("t", files=[tmp_path / "m" / "a.json"], dirs=[tmp_path / "d"]):
            # entering completed the killed run's renames: the whole new set is in place
            assert contents(tmp_path) == {"m/a.json": "new", "d/train.npz": "newtrain", "d/test.npz": "newtest"}
            raise RuntimeError("the next run fails")
    assert contents(tmp_path) == {"m/a.json": "new", "d/train.npz": "newtrain", "d/test.npz": "newtest"}
    assert not staging_dir("t", [tmp_path / "d"]).exists()


# --- build_hybrid_splits, killed mid-publish ---------------------------------------------------

PUBLISHED = ["hybrid/train.npz", "hybrid/val.npz", "hybrid/test.npz", "metrics/hybrid.json",
             "metrics/validation.json", "plots/hybrid/counts.csv"]
DECLARED = ["hybrid", "metrics", "plots", "reports/validation"]


def build(root: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV} | ({FAULT_ENV: fault} if fault else {})
    return subprocess.run([sys.executable, str(REPO / "src" / "build_hybrid_splits.py"), *stage_args(root)],
                          env=env, capture_output=True, text=True, timeout=600)


def digests(root: Path) -> dict[str, str]:
    return {p: hashlib.sha256((root / p).read_bytes()).hexdigest() for p in PUBLISHED}


@pytest.mark.integration
def test_build_hybrid_splits_killed_mid_publish_keeps_its_splits_from_one_run(tmp_path):
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    for root, seed in ((old_root, 0), (new_root, 1)):   # two runs whose splits differ
        make_inputs(root)
        write_params(root, train_cap_per_class=8, seed=seed)
        assert build(root).returncode == 0
    old, new = digests(old_root), digests(new_root)
    assert all(old[p] != new[p] for p in PUBLISHED[:3])

    write_params(old_root, train_cap_per_class=8, seed=1)
    killed = build(old_root, fault="before_journal")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert digests(old_root) == old
    inside = sorted(p.relative_to(old_root).as_posix() for d in DECLARED for p in (old_root / d).rglob("*")
                    if p.is_file() and p.name.startswith("."))
    assert not inside, f"temporary files inside declared outputs: {inside}"

    killed = build(old_root, fault="after_first_rename")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (old_root / "adversarial" / "t_a.npz").unlink()      # the next run fails on its inputs...
    failed = build(old_root)
    assert failed.returncode != 0 and "t_a.npz" in failed.stderr
    assert digests(old_root) == new                       # ...after finishing the killed run's set


# --- one file, written by a stage killed mid-write -------------------------------------------

KILLED_WRITE = """
import os, signal
from advhybrid.io import atomic_path
with atomic_path("models/targets/resnet56.pt", suffix=".pt") as tmp:
    tmp.write_bytes(b"half a checkpoint")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_write_killed_midway_leaves_no_temporary_file_inside_a_folder_output(tmp_path):
    (tmp_path / "models" / "targets").mkdir(parents=True)
    (tmp_path / "models" / "targets" / "vgg19bn.pt").write_bytes(b"old")
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE], cwd=tmp_path, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in (tmp_path / "models" / "targets").iterdir()] == ["vgg19bn.pt"]


def test_atomic_writes_under_the_working_directory_leave_nothing_behind(tmp_path, monkeypatch):
    from advhybrid.io import TMP_DIR, save_json

    monkeypatch.chdir(tmp_path)
    save_json("metrics/a.json", {"a": 1})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["metrics", "metrics/a.json"]
    assert not (tmp_path / TMP_DIR).exists()
