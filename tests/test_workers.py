"""Per-network jobs in worker processes (advhybrid.workers, `<section>.jobs`): the same outputs as
one after another, errors that name the network, and no jobs > 1 under torchrun."""
from __future__ import annotations

import csv
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from advhybrid import dist, workers
from advhybrid.io import save_npz
from advhybrid.params import ParamsError, Section
from advhybrid.schema import validate_params
from conftest import REPO, pipeline_env, stage_args, synthetic_cifar

TARGETS = ["resnet56", "vgg19bn"]


def job(name: str, seconds: float, fail: bool = False) -> tuple[str, torch.Tensor, int]:
    """A job of the tests: module-level, so a spawned worker imports it by name."""
    time.sleep(seconds)
    if fail:
        raise ValueError(f"no network like {name}")
    return name, torch.full((2,), float(len(name))), torch.get_num_threads()


@pytest.mark.integration
def test_workers_yield_what_one_process_yields_in_the_jobs_order():
    jobs = {"slow": ("slow", 1.5), "b": ("b", 0.0), "cc": ("cc", 0.0)}  # b and cc finish first
    here = list(workers.run(job, jobs, 1))
    apart = list(workers.run(job, jobs, 2))
    assert [n for n, _ in apart] == [n for n, _ in here] == list(jobs)
    for (_, (a, x, _)), (_, (b, y, threads)) in zip(here, apart):
        assert a == b and torch.equal(x, y)
        assert threads == max(1, torch.get_num_threads() // 2)  # each worker its share of the threads


@pytest.mark.integration
def test_a_failing_worker_raises_its_own_error_naming_the_network_and_stops_the_others():
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="no network like b") as err:
        list(workers.run(job, {"a": ("a", 120.0), "b": ("b", 0.0, True)}, 2))
    assert time.perf_counter() - t0 < 60  # "a" was stopped, not awaited
    assert any("'b'" in note for note in err.value.__notes__)
    remote = str(err.value.__cause__)  # the worker's own traceback
    assert "in job" in remote and 'raise ValueError(f"no network like {name}")' in remote


def test_jobs_above_one_under_torchrun_stop_naming_the_keys(monkeypatch):
    section = lambda **kv: Section(kv, "targets", "params.yaml")  # noqa: E731
    assert workers.jobs_param(section()) == 1  # a params file from before the key: one after another
    assert workers.jobs_param(section(jobs=2)) == 2
    with pytest.raises(ParamsError, match=r"'targets.jobs' must be >= 1, got 0"):
        workers.jobs_param(section(jobs=0))
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    assert workers.jobs_param(section(jobs=1)) == 1
    with pytest.raises(ParamsError, match=r"'targets.jobs'=2 with 2 torchrun processes \('dist.nproc_per_node'\)"):
        workers.jobs_param(section(jobs=2))


def test_check_params_refuses_jobs_with_several_torchrun_processes(tmp_path):
    from dvc.utils.hydra import compose_and_dump

    out = tmp_path / "params.yaml"
    overrides = ["scale=reference", "data.source=official", "dist.nproc_per_node=2"]
    compose_and_dump(out, str(REPO / "conf"), None, "config", str(tmp_path), overrides)
    doc = yaml.safe_load(out.read_text())
    assert doc["targets"]["jobs"] == doc["gan"]["jobs"] == 2
    with pytest.raises(ParamsError) as err:
        validate_params(doc)
    for key in ("targets.jobs", "gan.jobs", "seeds.jobs"):
        assert f"'{key}'=2 with 'dist.nproc_per_node'=2" in str(err.value)
    doc["targets"]["jobs"] = doc["gan"]["jobs"] = doc["seeds"]["jobs"] = 1
    validate_params(doc)  # adversarial and adaptive never run under torchrun: 2 is fine


# --- the three stages at jobs 1 and 2 on a tiny workspace ------------------------------------


def params(jobs: int) -> dict:
    common = dict(targets=TARGETS, seed=0, jobs=jobs)
    return {
        "targets": dict(models=TARGETS, width=0.125, train_images=20, test_images=20, epochs=1, batch_size=10,
                        lr=0.001, weight_decay=0.0, restart_epochs=1, restart_mult=1, label_smoothing=0.0,
                        augment=False, seed=0, compile=False, jobs=jobs),
        "gan": dict(common, train_images=20, eval_images=20, k_default=1.0, eps_255=32, conditional=True,
                    output="tanh", gen_width=4, gen_res_blocks=1, disc_width=4, gan_loss="lsgan", epochs=1,
                    batch_size=10, lr_g=1e-3, lr_d=1e-3, schedule="onecycle", beta1=0.5, beta2=0.999,
                    objective="both", w_gan=0.1, d_every=1, w_adv=1.0, w_hinge=0.0, kappa=10.0, hinge_bound=1.0,
                    log_every=1),
        "adversarial": dict(common, k_min=0.25, k_max=1.0, k_step=0.25, train_images=10, test_images=10,
                            batch_size=16),
    }


def shape(ws: Path) -> dict:
    """What a reader of the outputs sees, without the numbers: files, JSON keys, CSV and npz columns."""
    out = {}
    for path in sorted(p for p in ws.rglob("*") if p.is_file() and "checkpoints" not in p.parts):
        rel = str(path.relative_to(ws))
        if path.suffix == ".json":
            out[rel] = {k: sorted(v) for k, v in json.loads(path.read_text()).items()}
        elif path.suffix == ".csv":
            out[rel] = next(csv.reader(path.open()))
        elif path.suffix == ".npz":
            out[rel] = sorted(np.load(path).files)
        else:
            out[rel] = None
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """The three stages in a tiny workspace each, here (their modules importable by name from
    src/), but train_targets at jobs 2 as DVC runs it: its script as __main__, which the spawned
    workers import again. jobs 1 runs on one thread, as each of the two workers of jobs 2 does,
    so any difference would be the workers' own, not the thread count's."""
    images, labels = synthetic_cifar(10)
    sys.path.insert(0, str(REPO / "src"))
    env = pipeline_env() | {"ADVHYBRID_DEVICE": "cpu", "ADVHYBRID_THREADS": "2"}
    out, threads = {}, torch.get_num_threads()
    try:
        for jobs in (1, 2):
            ws = out[jobs] = tmp_path_factory.mktemp(f"jobs{jobs}")
            for split in ("train", "test"):
                save_npz(ws / "data/raw/cifar10" / f"{split}.npz", images=images, labels=labels)
            (ws / "params.yaml").write_text(yaml.safe_dump(params(jobs)))
            if jobs > 1:
                subprocess.run([sys.executable, str(REPO / "src/train_targets.py"), *stage_args("train_targets")],
                               cwd=ws, env=env, check=True, timeout=300)
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(ws)
                mp.setenv("ADVHYBRID_DEVICE", "cpu")
                mp.setenv("ADVHYBRID_THREADS", "1" if jobs == 1 else "2")  # each stage's set_threads() reads it
                for stage in ("train_targets", "train_gan", "generate_adversarial")[1 if jobs > 1 else 0:]:
                    importlib.import_module(stage).main([*stage_args(stage)])
    finally:
        sys.path.remove(str(REPO / "src"))
        for stage in ("train_targets", "train_gan", "generate_adversarial"):
            sys.modules.pop(stage, None)
        torch.set_num_threads(threads)
    return out


@pytest.mark.integration
def test_two_jobs_write_the_files_and_keys_one_job_writes(runs):
    one, two = shape(runs[1]), shape(runs[2])
    assert one == two
    for stage_out in ("models/targets/resnet56.pt", "models/gan/vgg19bn.pt", "data/adversarial/vgg19bn.npz",
                      "metrics/targets.json", "metrics/gan.json", "metrics/adversarial.json"):
        assert stage_out in one
    assert list(json.loads((runs[2] / "metrics/targets.json").read_text())) == TARGETS  # the params' order
    for jobs in (1, 2):  # each network resumes from its own checkpoint
        assert {p.name for p in (runs[jobs] / "checkpoints/train_targets").iterdir()} == {f"{t}.pt" for t in TARGETS}


@pytest.mark.integration
def test_two_one_thread_workers_compute_what_one_thread_computes_alone(runs):
    for path in sorted((runs[1] / "models").rglob("*.pt")):
        one = torch.load(path, weights_only=True)
        two = torch.load(runs[2] / path.relative_to(runs[1]), weights_only=True)
        assert one.keys() == two.keys()
        for k, t in one["state_dict"].items():
            assert torch.equal(t, two["state_dict"][k]), f"{path}: {k}"
    for path in sorted((runs[1] / "data/adversarial").glob("*.npz")):
        one, two = np.load(path), np.load(runs[2] / path.relative_to(runs[1]))
        assert all(np.array_equal(one[k], two[k]) for k in one.files), path
    for stage in ("targets", "gan", "adversarial"):
        one, two = (json.loads((r / f"metrics/{stage}.json").read_text()) for r in (runs[1], runs[2]))
        for rec in (*one.values(), *two.values()):
            rec.pop("minutes", None)  # the one figure that is the clock's
        assert one == two, stage
