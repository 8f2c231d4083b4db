"""seed@<n> with `seeds.jobs` 2 (advhybrid.workers): the defended model and its control trained in
two worker processes write what one process writes, one after the other."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from advhybrid.io import save_npz
from conftest import REPO, stage_args, synthetic_cifar

TRAIN = dict(models=["vgg19bn"], width=0.0625, epochs={"vgg19bn": 1}, batch_size=10, lr=0.001, weight_decay=0.0,
             restart_epochs=1, restart_mult=1, label_smoothing=0.0, augment=False, seed=0, compile=False)


def hybrid_split(n_per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Real images and one AE each (the real image slightly shifted), paired by source id."""
    images, labels = synthetic_cifar(n_per_class, seed)
    adv = np.clip(images.astype(int) + 8, 0, 255).astype(np.uint8)
    sid = np.arange(len(images)) + 1000 * seed
    return dict(images=np.concatenate([images, adv]), labels=np.concatenate([labels, labels]),
                is_adv=np.r_[np.zeros(len(images), int), np.ones(len(images), int)], source_id=np.r_[sid, sid])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """seed@1 at jobs 1 (one thread, as each of jobs 2's two workers has) and at jobs 2."""
    sys.path.insert(0, str(REPO / "src"))  # the spawned workers import train_seed by name, like this process
    out = {}
    try:
        for jobs in (1, 2):
            ws = out[jobs] = tmp_path_factory.mktemp(f"seed_jobs{jobs}")
            for i, split in enumerate(("train", "val", "test")):
                save_npz(ws / "data/hybrid" / f"{split}.npz", **hybrid_split(2, i))
            (ws / "params.yaml").write_text(yaml.safe_dump({"train": TRAIN, "seeds": dict(model="vgg19bn", extra=[1], jobs=jobs)}))
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(ws)
                mp.setenv("ADVHYBRID_DEVICE", "cpu")
                mp.setenv("ADVHYBRID_THREADS", "1" if jobs == 1 else "2")
                importlib.import_module("train_seed").main([*stage_args("seed", "1")])
    finally:
        sys.path.remove(str(REPO / "src"))
        sys.modules.pop("train_seed", None)
    return out


@pytest.mark.integration
def test_two_jobs_write_what_one_job_writes(runs):
    one, two = (json.loads((runs[j] / "metrics/seeds/s1.json").read_text()) for j in (1, 2))
    assert list(one) == list(two) == ["model", "seed", "defended", "control"]
    assert (one["model"], one["seed"]) == (two["model"], two["seed"]) == ("vgg19bn", 1)
    for kind in ("defended", "control"):
        assert list(one[kind]) == list(two[kind])
        assert one[kind]["train_images"] == two[kind]["train_images"] == 40
        one[kind].pop("minutes"), two[kind].pop("minutes")  # the clock's, not the training's
        assert one[kind] == two[kind], kind  # one thread each: the same numbers
    for jobs in (1, 2):  # each model resumes from its own checkpoint
        assert {p.name for p in (runs[jobs] / "checkpoints/seeds").iterdir()} == {
            "defended_vgg19bn_s1.pt", "control_vgg19bn_s1.pt"}
