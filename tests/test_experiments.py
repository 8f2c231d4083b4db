"""The experiment workflow on the smoke pipeline: run one experiment with a changed learning rate
(`dvc exp run -S`), then compare it with the committed baseline through `dvc exp show`,
`dvc params diff`, `dvc metrics diff` and `dvc plots diff`; queue one without running it.
Only the stages downstream of `train` rerun, once, in a clone that borrows smoke_repo's cache.

Then the docs' several-GPU queue recipe, on a tiny project of its own (no GPU needed).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import isolated_dvc_env, smoke_overrides
import yaml
from dvc_render.base import Renderer

pytestmark = pytest.mark.slow

EXP_NAME = "lr-x2"






def run(cwd: Path, *cmd: str, env: dict[str, str], timeout: float = 300) -> str:
    if cmd[0] == "dvc":
        cmd = (sys.executable, "-m", "dvc", *cmd[1:])
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"`{' '.join(cmd)}` in {cwd} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def run_json(cwd: Path, *cmd: str, env: dict[str, str]):
    out = run(cwd, *cmd, "--json", env=env)
    try:
        return json.loads(out)
    except json.JSONDecodeError as e:
        raise AssertionError(f"`{' '.join(cmd)} --json` printed no JSON ({e}):\n{out}") from None


def train_lr(params: dict) -> float:
    try:
        return float(params["train"]["lr"])
    except (KeyError, TypeError):
        raise AssertionError(f"no train.lr in params.yaml: {params}") from None


@pytest.fixture(scope="module")
def experiment(smoke_repo: Path, shared_cifar_archive: Path, tmp_path_factory) -> dict:
    """A clone of smoke_repo in which `dvc exp run -S scale=smoke -S train.lr=<2x baseline>` ran;
    its results are applied to the workspace, the baseline is HEAD."""
    isolated = tmp_path_factory.mktemp("no-user-config")
    env = isolated_dvc_env(isolated)
    repo = tmp_path_factory.mktemp("exp") / "repo"
    run(repo.parent, "git", "clone", "-q", str(smoke_repo), str(repo), env=env, timeout=120)
    # no pull needed: the clone uses smoke_repo's cache (content-addressed, so sharing is safe)
    run(repo, "dvc", "cache", "dir", "--local", str(smoke_repo / ".dvc" / "cache"), env=env)
    run(repo, "dvc", "checkout", env=env, timeout=600)

    old_lr = train_lr(yaml.safe_load((repo / "params.yaml").read_text()))
    new_lr = old_lr * 2
    t0 = time.perf_counter()
    run(repo, "dvc", "exp", "run", "-n", EXP_NAME, *smoke_overrides(shared_cifar_archive),
        "-S", f"train.lr={new_lr!r}", env=env, timeout=1200)
    print(f"\n[timing] dvc exp run -S train.lr={new_lr!r} at smoke scale: "
          f"{time.perf_counter() - t0:.1f} s")
    return {"repo": repo, "env": env, "old_lr": old_lr, "new_lr": new_lr,
            "overrides": smoke_overrides(shared_cifar_archive)}


def test_exp_run_applies_the_new_learning_rate_to_the_workspace(experiment):
    params = yaml.safe_load((experiment["repo"] / "params.yaml").read_text())
    assert train_lr(params) == pytest.approx(experiment["new_lr"])


def test_exp_show_lists_the_experiment_with_its_params_and_metrics(experiment):
    rows = run_json(experiment["repo"], "dvc", "exp", "show", env=experiment["env"])
    exps = [rev for row in rows for group in (row.get("experiments") or [])
            for rev in group["revs"] if rev.get("name") == EXP_NAME]
    assert len(exps) == 1, f"experiment {EXP_NAME!r} not in `dvc exp show --json`: {rows}"
    data = exps[0]["data"]
    assert train_lr(data["params"]["params.yaml"]["data"]) == pytest.approx(experiment["new_lr"])
    assert data["metrics"], f"experiment {EXP_NAME!r} has no metrics in `dvc exp show`"
    assert all(m.get("data") for m in data["metrics"].values()), data["metrics"]


def test_params_diff_reports_only_the_changed_learning_rate(experiment):
    diff = run_json(experiment["repo"], "dvc", "params", "diff", env=experiment["env"])
    assert set(diff) == {"params.yaml"} and set(diff["params.yaml"]) == {"train.lr"}, (
        f"expected only train.lr to differ from the baseline (are smoke_overrides() the ones "
        f"smoke_repo ran with?): {diff}")
    lr = diff["params.yaml"]["train.lr"]
    assert (lr["old"], lr["new"]) == (pytest.approx(experiment["old_lr"]),
                                      pytest.approx(experiment["new_lr"]))


def test_metrics_diff_covers_every_metrics_file_and_shows_a_change(experiment):
    repo, env = experiment["repo"], experiment["env"]
    shown = run_json(repo, "dvc", "metrics", "show", env=env)   # {rev: {"data": {file: ...}}}
    files = {f for rev in shown.values() for f in rev.get("data", {})}
    diff = run_json(repo, "dvc", "metrics", "diff", "--all", env=env)
    assert files and set(diff) == files, f"metrics files {files}, `dvc metrics diff` has {set(diff)}"
    changed = [f"{f}:{k}" for f, ms in diff.items() for k, v in ms.items() if v["old"] != v["new"]]
    assert changed, f"doubling train.lr changed no metric at all: {diff}"


def test_plots_diff_writes_html_showing_both_revisions(experiment, tmp_path):
    repo, env = experiment["repo"], experiment["env"]
    plots = run_json(repo, "dvc", "plots", "diff", "-o", str(tmp_path / "json"), env=env)["data"]
    vega = [pid for pid, items in plots.items() if any(i.get("type") == "vega" for i in items)]
    assert vega, f"`dvc plots diff` found no data plots: {list(plots)}"
    run(repo, "dvc", "plots", "diff", "-o", str(tmp_path / "plots"), env=env)
    html = (tmp_path / "plots" / "index.html").read_text()
    # each plot is a <div> whose id is its path made HTML-safe (dvc-render's own rule)
    missing = [pid for pid in plots if Renderer.remove_special_chars(pid) not in html]
    assert not missing, f"plots missing from index.html: {missing}"
    assert "workspace" in html and "HEAD" in html, "index.html does not compare the two revisions"


def test_queued_experiment_waits_for_queue_start(experiment):
    repo, env = experiment["repo"], experiment["env"]
    run(repo, "dvc", "exp", "run", "--queue", "-n", "queued-lr", *experiment["overrides"],
        "-S", f"train.lr={experiment['old_lr'] / 2!r}", env=env)
    try:
        status = run(repo, "dvc", "queue", "status", env=env)
        assert "queued-lr" in status and "Queued" in status, status
    finally:
        run(repo, "dvc", "queue", "remove", "--queued", env=env)
    assert "queued-lr" not in run(repo, "dvc", "queue", "status", env=env)


COMPARE = Path(__file__).resolve().parents[1] / "tools" / "compare.py"


def compare(repo: Path, env: dict[str, str], out: Path, *revs: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COMPARE), *revs, "-o", str(out)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)


def test_compare_report_names_the_changed_param_the_moved_metrics_and_embeds_the_plots(experiment, tmp_path):
    repo, env = experiment["repo"], experiment["env"]
    out = tmp_path / "compare.md"
    proc = compare(repo, env, out, "HEAD", EXP_NAME)        # a commit against an experiment, by name
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    params = text.split("## Params")[1].split("## Metrics")[0]
    assert "`train.lr`" in params and params.count("| `") == 1, f"only train.lr changed:\n{params}"
    # at smoke scale (40 test images) one model's accuracies may not move, but some model's do
    assert "metrics/summary/models/" in text and "metrics changed" in text
    assert "## Goals" in text and "## Robustness verdict" in text
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert any("plots_train" in i for i in images), f"the training curves moved but are not shown: {images}"
    for rel in images:
        assert (out.parent / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{rel} is not a PNG"
    assert f"dvc exp apply {EXP_NAME}" in text and "git checkout" in text, "each side's command is missing"


def test_compare_of_a_revision_with_itself_says_nothing_changed(experiment, tmp_path):
    repo, env = experiment["repo"], experiment["env"]
    proc = compare(repo, env, tmp_path / "same.md", EXP_NAME, EXP_NAME)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing changed" in (tmp_path / "same.md").read_text()


def test_compare_of_a_missing_revision_names_it_and_writes_nothing(experiment, tmp_path):
    proc = compare(experiment["repo"], experiment["env"], tmp_path / "x.md", "no-such-rev")
    assert proc.returncode == 2 and "'no-such-rev' is neither a git revision nor a DVC experiment" in proc.stderr
    assert not (tmp_path / "x.md").exists()


GPU_STAGE = """\
import json, os, pathlib, time
release, deadline = pathlib.Path(os.environ["ADVHYBRID_TEST_RELEASE"]), time.time() + 120
while not release.exists() and time.time() < deadline:   # hold the worker until both run
    time.sleep(0.2)
json.dump({"gpu": int(os.environ.get("CUDA_VISIBLE_DEVICES", "-1"))}, open("gpu.json", "w"))
"""


def wait_for(repo: Path, env: dict[str, str], running: int, done: int, timeout: float) -> None:
    deadline, status = time.monotonic() + timeout, ""
    while time.monotonic() < deadline and "Failed" not in status:
        status = run(repo, "dvc", "queue", "status", env=env)
        if status.count("Running") >= running and status.count("Success") >= done:
            return
        time.sleep(1)
    raise AssertionError(f"the queue never had {running} running and {done} done:\n{status}")


def start_worker(repo: Path, env: dict[str, str], jobs: int, gpu: str, log: Path) -> None:
    # the worker inherits our stdout/stderr: with pipes, subprocess.run would wait for it to exit
    with open(log, "a") as out:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)], cwd=repo,
                       env={**env, "CUDA_VISIBLE_DEVICES": gpu}, stdout=out, stderr=out,
                       timeout=60, check=True)


def test_each_queue_worker_keeps_the_gpu_it_was_started_with(tmp_path: Path):
    """The docs' several-GPU recipe: start worker k with CUDA_VISIBLE_DEVICES=k via
    `dvc queue start -j k`; each experiment then sees only its worker's GPU. A tiny project,
    no GPU needed: the stage records the CUDA_VISIBLE_DEVICES it was given."""
    repo, release = tmp_path / "repo", tmp_path / "release"
    repo.mkdir()
    (repo / "stage.py").write_text(GPU_STAGE)
    (repo / "params.yaml").write_text("lr: 0.1\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  fit:\n    cmd: python stage.py\n    deps: [stage.py]\n    params: [lr]\n"
        "    metrics:\n      - gpu.json:\n          cache: false\n")
    env = isolated_dvc_env(tmp_path, ADVHYBRID_TEST_RELEASE=str(release))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    run(repo, "git", "init", "-q", env=env)
    run(repo, "dvc", "init", "-q", env=env)
    run(repo, "git", "add", "-A", env=env)
    run(repo, "git", "commit", "-qm", "tiny project", env=env)
    for name, lr in (("a", "0.2"), ("b", "0.3")):
        run(repo, "dvc", "exp", "run", "--queue", "-n", name, "-S", f"lr={lr}", env=env)
    try:
        start_worker(repo, env, jobs=1, gpu="0", log=tmp_path / "queue.log")
        wait_for(repo, env, running=1, done=0, timeout=60)   # worker 1 exists before we ask for 2
        start_worker(repo, env, jobs=2, gpu="1", log=tmp_path / "queue.log")
        wait_for(repo, env, running=2, done=0, timeout=60)
        release.touch()
        wait_for(repo, env, running=0, done=2, timeout=60)
    finally:
        release.touch()
        run(repo, "dvc", "queue", "stop", env=env, timeout=60)
    rows = run_json(repo, "dvc", "exp", "show", env=env)
    gpus = {rev["name"]: rev["data"]["metrics"]["gpu.json"]["data"]["gpu"]
            for row in rows for group in (row.get("experiments") or []) for rev in group["revs"]}
    assert sorted(gpus.values()) == [0, 1], f"GPU seen by each experiment: {gpus}"


# --- issue 18: what `dvc exp show` and `dvc metrics show` print after two smoke experiments ------

FIXED_COLUMNS = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v}
    return out


def test_exp_show_has_at_most_80_metric_columns_and_every_value_is_a_number(experiment):
    repo, env = experiment["repo"], experiment["env"]
    header, *rows = run(repo, "dvc", "exp", "show", "--csv", env=env).strip().splitlines()
    columns = header.split(",")
    data = run_json(repo, "dvc", "exp", "show", env=env)[0]["data"]
    params = {k for p in data["params"].values() for k in _flat(p["data"])}
    deps = set(data["deps"])
    metric_idx = [i for i, c in enumerate(columns) if c not in FIXED_COLUMNS | params | deps]
    assert 0 < len(metric_idx) <= 80, [columns[i] for i in metric_idx]
    import csv
    for row in csv.reader([header, *rows]):
        if row[0] == "Experiment" or not any(row[i] for i in metric_idx):
            continue
        for i in metric_idx:
            if row[i]:
                float(row[i])  # raises on a string, a list or a dict
    shown = run_json(repo, "dvc", "metrics", "show", env=env)
    values = [v for rev in shown.values() for f in rev["data"].values() for v in _flat(f["data"]).values()]
    assert values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def test_metrics_diff_between_two_experiments_lists_only_figures_that_moved(experiment):
    repo, env = experiment["repo"], experiment["env"]
    diff = run_json(repo, "dvc", "metrics", "diff", "HEAD", EXP_NAME, env=env)
    moved = {f"{f}:{k}" for f, ms in diff.items() for k in ms}
    assert moved and all(v["old"] != v["new"] for ms in diff.values() for v in ms.values()), diff
    assert any(m.startswith("metrics/summary/models/") for m in moved), moved
    assert not any(m.startswith("metrics/summary/targets/") for m in moved), "lr of train@ moved a target"


def test_make_show_fits_a_200_column_terminal_and_shows_what_changed(experiment):
    repo, env = experiment["repo"], experiment["env"]
    venv = Path(sys.executable).parent.parent
    out = subprocess.run(["make", "-s", "show", f"VENV={venv}"], cwd=repo, env=env | {"COLUMNS": "200"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(map(len, lines)) <= 200, max(lines, key=len)
    text = out.stdout
    assert EXP_NAME in text and "train.lr" in text and "models/" in text
    assert "train.epochs" not in text and "targets/resnet56:acc" not in text  # unchanged: hidden
