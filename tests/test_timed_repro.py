"""tools/timed_repro.py on a fake DVC: stage lines found, timed in order, exit code passed through."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "timed_repro.py"
sys.path.insert(0, str(TOOL.parent))
import timed_repro  # noqa: E402

# What `dvc repro` prints (DVC 3.x wording), with sleeps standing in for the stages' work.
FAKE_DVC = textwrap.dedent("""
    import sys, time
    print("Stage 'check_params' didn't change, skipping")
    print("Running stage 'train_targets':")
    print("> python src/train_targets.py")
    print("epoch 1\\repoch 2\\r", end="\\n")
    time.sleep(0.9)
    print("Updating lock file 'dvc.lock'")
    print("Running stage 'train@resnet50':")
    print("oops", file=sys.stderr)
    time.sleep(0.3)
    sys.exit(3)
""")


def table_rows(text: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return rows[1:]  # past the header


def test_fake_repro_table_and_exit_code(tmp_path: Path) -> None:
    fake = tmp_path / "fake_dvc.py"
    fake.write_text(FAKE_DVC)
    out = tmp_path / "timing" / "stages.md"
    proc = subprocess.run([sys.executable, str(TOOL), "-o", str(out), "--", sys.executable, str(fake)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "oops" in proc.stdout and "Running stage 'train_targets':" in proc.stdout  # passed through

    text = out.read_text()
    assert "exit code 3" in text
    rows = table_rows(text)
    assert [(r[0], r[3]) for r in rows] == [("check_params", "skipped"), ("train_targets", "ran"),
                                            ("train@resnet50", "ran"), ("**total**", "2 ran, 1 skipped")]
    minutes = {r[0]: float(r[2]) for r in rows}
    assert minutes["train_targets"] >= 0.01  # slept 0.9 s: rounds to 0.01 or 0.02
    assert minutes["**total**"] >= minutes["train_targets"]
    assert rows[0][1] <= rows[1][1] <= rows[2][1]  # start times, ISO order

    log = (out.parent / "stages.log").read_text().splitlines()
    assert any(line.endswith(" epoch 2") for line in log)  # a \r-redrawn line keeps its last state
    assert all(line[:4].isdigit() and "T" in line.split()[0] for line in log)  # every line stamped
    assert not list(out.parent.glob(".*.tmp"))  # no temporary file left behind


def test_real_dvc_wording(tmp_path: Path) -> None:
    """The installed DVC's own lines: a stage already run is skipped, the next one runs."""
    dvc = str(Path(sys.executable).parent / "dvc")
    def sh(*args: str) -> None:
        subprocess.run([dvc, *args], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    sh("init", "--no-scm", "-q")
    sh("stage", "add", "-q", "-n", "first", "-o", "a.txt", "echo hi > a.txt")
    sh("stage", "add", "-q", "-n", "second", "-d", "a.txt", "-o", "b.txt", "cp a.txt b.txt")
    sh("repro", "-q", "first")
    proc = subprocess.run([sys.executable, str(TOOL), "-o", "t.md", "--", dvc, "repro"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
    assert [(r[0], r[3]) for r in table_rows((tmp_path / "t.md").read_text())] == [
        ("first", "skipped"), ("second", "ran"), ("**total**", "1 ran, 1 skipped")]


def test_missing_command_exits_127(tmp_path: Path) -> None:
    rc = timed_repro.main(["-o", str(tmp_path / "t.md"), "--", str(tmp_path / "no-such-dvc")])
    assert rc == 127


@pytest.mark.parametrize("line, expected", [
    ("Running stage 'eval_mixed':", ("eval_mixed", "ran")),
    ("Stage 'train@vgg19bn' didn't change, skipping", ("train@vgg19bn", "skipped")),
    ("'data.dvc' didn't change, skipping", ("data.dvc", "skipped")),
    ("Stage 'report' is cached - skipping run, checking out outputs", ("report", "cached")),
    ("\x1b[33mRunning stage 'x':\x1b[0m", ("x", "ran")),
    ("> python src/report.py --note \"Running stage 'y':\"", None),
    ("Updating lock file 'dvc.lock'", None),
])
def test_parse_stage(line: str, expected: tuple[str, str] | None) -> None:
    assert timed_repro.parse_stage(line) == expected


def test_combined_attempts_count_every_minute_from_the_first_start_to_the_last_end(tmp_path: Path) -> None:
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    first.write_text("2026-01-01T10:00:00.000+00:00 Reproducing experiment 'x'\n"
                     "2026-01-01T10:00:00.000+00:00 Running stage 'train_targets':\n"
                     "2026-01-01T10:30:00.000+00:00 Running stage 'build_hybrid_splits':\n"
                     "2026-01-01T10:32:00.000+00:00 ERROR: failed to reproduce 'build_hybrid_splits': failed to run\n")
    second.write_text("2026-01-01T10:35:00.000+00:00 Stage 'train_targets' didn't change, skipping\n"
                      "2026-01-01T10:35:00.000+00:00 Running stage 'build_hybrid_splits':\n"
                      "2026-01-01T10:40:00.000+00:00 done\n")
    table = timed_repro.combine([first, second])
    assert "**Wall time, first start to last end: 40.0 minutes** (3.0 of them between attempts)" in table
    assert "stage minutes (every stage that ran, failed attempts included): 37.0" in table
    assert "| build_hybrid_splits | 1 | 2026-01-01 10:30:00 | 2.00 | failed |" in table
    assert "| train_targets | 2 | 2026-01-01 10:35:00 | 0.00 | skipped |" in table
    assert "| build_hybrid_splits | 2 | 2026-01-01 10:35:00 | 5.00 | ran |" in table


def test_combine_refuses_a_file_that_is_not_its_log(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    with pytest.raises(SystemExit, match="notes.txt: no timestamped lines"):
        timed_repro.combine([bad])
