"""tools/gpu_run.sh, tools/gpu_prepare.sh and docs/gpu.md, without a GPU or a network.

gpu_run.sh runs fake commands under a deadline a few seconds away: a command that outlives the
stop time is stopped before the deadline (exit 75), one that ignores SIGINT gets SIGTERM, a
SIGTERM to the script itself stops the command the same way, a command that ends on its own
keeps its exit status, and nothing starts once the stop time has passed. gpu_prepare.sh builds a
wheelhouse from a local wheel (pip download with --no-index) and installs from it offline.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "tools" / "gpu_run.sh"
PREPARE = ROOT / "tools" / "gpu_prepare.sh"
DOC = ROOT / "docs" / "gpu.md"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ADVHYBRID_DEADLINE", "ADVHYBRID_WALLTIME", "ADVHYBRID_STOP"))}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", **extra}


def run(script: Path, *args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def test_the_scripts_parse():
    for script in (RUN, PREPARE):
        subprocess.run(["bash", "-n", str(script)], check=True)


# --- gpu_run.sh ----------------------------------------------------------------------------------

def test_gpu_run_without_a_deadline_prints_its_usage():
    proc = run(RUN, "--", "true")
    assert proc.returncode == 2, proc
    assert "ADVHYBRID_DEADLINE" in proc.stderr and "usage:" in proc.stderr


def test_gpu_run_refuses_bad_settings():
    for env in ({"ADVHYBRID_WALLTIME_S": "soon"},
                {"ADVHYBRID_WALLTIME_S": "60", "ADVHYBRID_DEADLINE": str(int(time.time()) + 60)},
                {"ADVHYBRID_WALLTIME_S": "60", "ADVHYBRID_STOP_MARGIN_S": "10", "ADVHYBRID_STOP_GRACE_S": "10"}):
        proc = run(RUN, "--", "true", **env)
        assert proc.returncode == 2 and "usage:" in proc.stderr, (env, proc)
    proc = run(RUN, "--", ADVHYBRID_WALLTIME_S="60")
    assert proc.returncode == 2 and "expected a command" in proc.stderr, proc


def test_gpu_run_starts_nothing_once_the_stop_time_has_passed(tmp_path):
    marker = tmp_path / "ran"
    past = str(int(time.time()) - 10)
    proc = run(RUN, "--", "touch", str(marker), ADVHYBRID_DEADLINE=past, ADVHYBRID_STOP_MARGIN_S="5",
               ADVHYBRID_STOP_GRACE_S="1")
    assert proc.returncode == 2, proc
    assert "nothing started" in proc.stderr
    # the deadline is ahead but within the margin: the same
    proc = run(RUN, "--", "touch", str(marker), ADVHYBRID_WALLTIME_S="100")   # default margin 300 s
    assert proc.returncode == 2 and "nothing started" in proc.stderr, proc
    assert not marker.exists()


def test_gpu_run_keeps_the_exit_status_of_a_command_that_ends_in_time():
    short = {"ADVHYBRID_WALLTIME_S": "60", "ADVHYBRID_STOP_MARGIN_S": "5", "ADVHYBRID_STOP_GRACE_S": "1"}
    ok = run(RUN, "--", "bash", "-c", "echo hello", **short)
    assert ok.returncode == 0 and "hello" in ok.stdout, ok
    failed = run(RUN, "--", "bash", "-c", "exit 7", **short)
    assert failed.returncode == 7, failed


def test_gpu_run_stops_the_command_before_the_deadline_sigterm_if_it_ignores_sigint(tmp_path):
    # stop time 2 to 3 s away, deadline 27 s after it (busy cores are slow to start and end
    # processes); the command ignores SIGINT, so it takes the SIGTERM that follows
    # ADVHYBRID_STOP_GRACE_S later, and all of it ends long before the deadline
    pidfile = tmp_path / "pid"
    deadline = int(time.time()) + 30
    proc = run(RUN, "--", "bash", "-c", f'trap "" INT; echo $$ > {pidfile}; while :; do sleep 0.2; done',
               timeout=60, ADVHYBRID_DEADLINE=str(deadline), ADVHYBRID_STOP_MARGIN_S="27",
               ADVHYBRID_STOP_GRACE_S="1")
    late = time.time() - deadline
    assert proc.returncode == 75, proc
    assert late < 0, f"ended {late:.1f}s after the deadline"
    assert "SIGINT" in proc.stdout and "SIGTERM" in proc.stdout and "resubmit" in proc.stdout, proc.stdout
    assert not Path(f"/proc/{pidfile.read_text().strip()}").exists(), "the command outlived the script"


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint-default", "sigint-ignored"])
def test_a_sigterm_to_gpu_run_stops_the_command_cleanly(tmp_path, sigint):
    # sigint-ignored: a job started by `nohup ... &` (or a shell without job control) inherits
    # SIGINT ignored; the command must still get the default back, or SIGINT cannot stop it
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}; exec sleep 600"  # one process, which SIGINT ends by default
    proc = subprocess.Popen(["bash", str(RUN), "--", "bash", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
                            env=_env(ADVHYBRID_WALLTIME_S="600", ADVHYBRID_STOP_MARGIN_S="60",
                                     ADVHYBRID_STOP_GRACE_S="30"))  # a long grace: busy cores are slow to exit
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 75, (out, err)
    assert "SIGTERM received" in out and "SIGINT to the pipeline" in out, out
    assert "SIGTERM\n" not in out, "SIGINT alone should have stopped it"
    assert not Path(f"/proc/{pidfile.read_text().strip()}").exists()


# --- gpu_prepare.sh ------------------------------------------------------------------------------

def test_gpu_prepare_without_arguments_prints_its_usage():
    proc = run(PREPARE)
    assert proc.returncode != 0
    assert "usage:" in proc.stderr and "requirements file" in proc.stderr, proc.stderr


def test_gpu_prepare_refuses_a_missing_list(tmp_path):
    proc = run(PREPARE, str(tmp_path / "nope.txt"), str(tmp_path / "wheels"))
    assert proc.returncode == 2 and "no such requirements file" in proc.stderr, proc
    (tmp_path / "req.txt").write_text("x\n")
    proc = run(PREPARE, "--install", str(tmp_path / "req.txt"), str(tmp_path / "wheels"))
    assert proc.returncode == 2 and "no such wheelhouse" in proc.stderr, proc
    proc = run(PREPARE, str(tmp_path / "req.txt"), str(tmp_path / "wheels"), "--no-deps")
    assert proc.returncode == 2 and "after --" in proc.stderr, proc


def _wheel(folder: Path, name: str = "advhybrid_fake_gpu_tools", version: str = "0.1") -> Path:
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{name}-{version}.dist-info/WHEEL":
                 "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = f"{name}-{version}.dist-info/RECORD"
    lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(text.encode())}")
    files[record] = "\n".join([*lines, f"{record},,"]) + "\n"
    whl = folder / f"{name}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return whl


def test_gpu_prepare_builds_a_wheelhouse_and_installs_from_it_offline(tmp_path):
    index = tmp_path / "index"
    _wheel(index)
    req = tmp_path / "requirements.txt"
    req.write_text("advhybrid-fake-gpu-tools==0.1\n")
    house = tmp_path / "wheels"
    py = {"PYTHON": sys.executable}
    down = run(PREPARE, str(req), str(house), "--", "--no-index", "--find-links", str(index), timeout=60, **py)
    assert down.returncode == 0, down
    assert [p.name for p in house.glob("*.whl")] == ["advhybrid_fake_gpu_tools-0.1-py3-none-any.whl"]
    assert (house / "MANIFEST.txt").read_text().split() == ["advhybrid_fake_gpu_tools==0.1"]

    target = tmp_path / "site"
    inst = run(PREPARE, "--install", str(req), str(house), "--", "--target", str(target), timeout=60, **py)
    assert inst.returncode == 0, inst
    assert "--no-index" in inst.stdout
    assert (target / "advhybrid_fake_gpu_tools" / "__init__.py").read_text() == "VALUE = 42\n"


# --- docs/gpu.md ---------------------------------------------------------------------------------

def test_the_gpu_doc_is_written_for_the_user():
    text = DOC.read_text()
    for pattern in (r"\bsessions?\b", r"\blent\b", r"\bborrowed\b", r"device tool", r"\bissue \d",
                    r"\blease", r"give_back", r"(^|[\s`'\"(])/tmp/"):
        assert not re.search(pattern, text, re.IGNORECASE | re.MULTILINE), pattern
    for needed in ("make paper", "ADVHYBRID_DEADLINE", "ADVHYBRID_WALLTIME_S", "tools/gpu_prepare.sh",
                   "nproc_per_node", "#SBATCH", "checkpoints/"):
        assert needed in text, needed
    assert len(text.splitlines()) <= 210
