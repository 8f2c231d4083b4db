"""Data parallel training under torchrun, on this CPU with Gloo (issue 15).

Two processes must train what one process trains with the same global batch and seed (within
float tolerance: the batch's sums are split in two), end with the same weights on both ranks,
resume together from rank 0's checkpoint after a kill, and leave every file to rank 0.
The workers are tests/ddp_worker.py, launched by `python -m torch.distributed.run` (torchrun).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import ddp_worker
from advhybrid import dist
from advhybrid.device import set_threads
from advhybrid.training import fit
from conftest import REPO

WORKER = REPO / "tests" / "ddp_worker.py"
CPU = torch.device("cpu")


def torchrun(mode: str, out: Path, nproc: int = 2, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "ADVHYBRID_CPU_BF16": "0", "ADVHYBRID_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", str(WORKER), mode, str(out)],
                          cwd=out, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun {mode} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp_fit")
    torchrun("fit", out)
    return torch.load(out / "fit.pt", weights_only=False)


@pytest.fixture
def fp32(monkeypatch):
    monkeypatch.setenv("ADVHYBRID_CPU_BF16", "0")  # the workers' precision: tolerances are fp32's


def one_process(cfg) -> tuple[dict, list[dict]]:
    """What the worker trains, in this one process."""
    x, y = ddp_worker.DATA
    model, hist = fit(ddp_worker.bn_net(), (x, y), (x[:30], y[:30]), cfg, CPU, name="bn_net",
                      select_best=cfg is not ddp_worker.RESUME)
    return model.state_dict(), hist


@pytest.mark.integration
def test_two_ranks_end_with_the_same_weights_and_buffers(two_ranks):
    a, b = two_ranks
    assert a["world"] == b["world"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["G"]:
        assert torch.equal(a["G"][key], b["G"][key]), key
    assert [{**r, "seconds": 0} for r in a["history"]] == [{**r, "seconds": 0} for r in b["history"]]


@pytest.mark.integration
def test_two_ranks_train_what_one_process_trains_with_the_same_global_batch(two_ranks, fp32):
    """No augmentation, synchronised BatchNorm, parts of 14 and 13 images of each batch of 27."""
    ref, hist = one_process(ddp_worker.FIT)
    ddp = two_ranks[0]
    for key, value in ref.items():
        torch.testing.assert_close(ddp["model"][key].float(), value.float(), rtol=1e-4, atol=1e-5, msg=key)
    for got, want in zip(ddp["history"], hist):
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k


@pytest.mark.integration
def test_torchrun_with_one_process_trains_bit_for_bit_as_a_plain_run(tmp_path, fp32):
    """dist.nproc_per_node=1 (the default) must leave every output as it was: no process group,
    the single-device code path, the same bytes."""
    torchrun("fit", tmp_path, nproc=1)
    (alone,) = torch.load(tmp_path / "fit.pt", weights_only=False)
    assert alone["world"] == 1
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the worker's ADVHYBRID_THREADS: oneDNN's sums depend on the split
    try:
        ref, hist = one_process(ddp_worker.FIT)
    finally:
        torch.set_num_threads(before)
    for key, value in ref.items():
        assert torch.equal(alone["model"][key], value), key
    assert [{**r, "seconds": 0} for r in alone["history"]] == [{**r, "seconds": 0} for r in hist]


@pytest.mark.integration
def test_the_gan_trains_under_two_ranks_with_finite_logged_losses(two_ranks):
    rows = two_ranks[0]["gan_history"]
    assert [r["step"] for r in rows] == [2, 4, 6, 7]  # 100 images in batches of 16: 7 steps
    assert all(torch.isfinite(torch.tensor([r[k] for k in ("d_loss", "g_gan", "g_adv", "g_hinge")])).all()
               for r in rows)


@pytest.mark.integration
def test_rank_1_never_writes_a_file_of_the_run(two_ranks, tmp_path):
    """The audit hook saw every open-for-writing and rename of rank 1; torch's own scratch files
    under the temporary folder are not the run's."""
    tmp = os.path.realpath(os.environ.get("TMPDIR", "/tmp"))
    ours = [w for w in two_ranks[1]["writes"]
            if not os.path.realpath(w.split(" ", 1)[-1]).startswith(tmp + os.sep) or "ddp_fit" in w]
    assert ours == [], ours


@pytest.mark.integration
def test_a_killed_two_process_run_resumes_from_rank_0s_checkpoint(tmp_path, fp32):
    killed = torchrun("die", tmp_path, check=False)
    assert killed.returncode != 0
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["epoch"] == 2
    assert not (tmp_path / "die.pt").exists()

    resumed = torchrun("resume", tmp_path)
    assert "resumed from" in resumed.stdout + resumed.stderr
    a, b = torch.load(tmp_path / "resume.pt", weights_only=False)
    assert [r["epoch"] for r in a["history"]] == [1, 2, 3]
    assert not [w for w in b["writes"] if str(tmp_path) in w], b["writes"]
    ref, hist = one_process(ddp_worker.RESUME)  # augmentation on: every rank draws the whole batch's crops
    for key, value in ref.items():
        assert torch.equal(a["model"][key], b["model"][key]), key
        torch.testing.assert_close(a["model"][key].float(), value.float(), rtol=1e-3, atol=1e-4, msg=key)
    assert a["history"][-1]["train_loss"] == pytest.approx(hist[-1]["train_loss"], rel=1e-4)


# --- without torchrun ------------------------------------------------------------------------


@pytest.mark.parametrize("n, world", [(100, 2), (27, 2), (19, 4), (3, 4), (1, 2)])
def test_the_ranks_parts_tile_the_global_batch_in_order(monkeypatch, n, world):
    parts = []
    for r in range(world):
        monkeypatch.setattr(dist, "world_size", lambda: world)
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        parts.append(dist.shard(n))
    assert [p.start for p in parts] == [0] + [p.stop for p in parts[:-1]] and parts[-1].stop == n
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_one_process_joins_no_process_group_and_keeps_its_model(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist.init(CPU) == CPU and not torch.distributed.is_initialized()
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    assert dist.sync_batchnorm(model, CPU) is model and type(model[0]) is torch.nn.BatchNorm2d


def test_threads_are_shared_by_the_processes_of_a_machine(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("ADVHYBRID_THREADS", "2")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        set_threads()
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        set_threads()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


TRAINING = {"train_targets", "train_gan", "train", "control", "train_fast_at", "seed"}


def test_training_stages_launch_themselves_with_torchrun_and_depend_on_dist():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        st = st.get("do", st)
        params = [p for p in st.get("params", []) if isinstance(p, str)]
        if name in TRAINING:
            assert st["cmd"].startswith("python -m torch.distributed.run --standalone "
                                        "--nproc_per_node=${dist.nproc_per_node} src/"), name
            assert "dist" in params, name
        else:
            assert "torch.distributed" not in st["cmd"] and "dist" not in params, name
    conf = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    assert conf["dist"] == {"nproc_per_node": 1}
