"""The paper scale, dry run on CPU: the paper's configuration must not fail an hour into a GPU run.

params.yaml is composed with `scale=paper` by DVC's own Hydra composition
(`dvc.utils.hydra.compose_and_dump`, what `dvc exp run -S` calls), with overrides that only
shrink image counts and epochs (SHRINK); the tests check that every other value is the paper
configuration's. Then, in a temporary copy of the checkout, the real `dvc repro` runs the real
stage commands of dvc.yaml on a few hundred CIFAR-10 images with full-width models, the
paper's batch sizes, learning rates, GAN architecture and k grid, every training and GAN stage
under torchrun with two processes (DIST): about 5 minutes on 2 cores.
The two composition tests are fast (seconds) and not marked slow.

What is real and what is planted:
- real: download_cifar (all 60,000 images), train_targets (the five full-width targets, one
  step each), train_gan (one full-size generator per target, one step), generate_adversarial
  (the k search over the paper's grid). Each is asserted to finish and write its outs.
- planted: data/adversarial/<target>.npz is then REPLACED by AEs made here from real CIFAR-10
  images (8 sources per class, 6 from train and 2 from test, every target) with a random
  perturbation of at most round(8k) grey levels for a k on the paper's grid, with consistent
  metadata (true labels, source_split, source_index, target_class != label, pred = target_class,
  k, and l2/linf/ssim from advhybrid.attacks.quality.image_quality). Barely trained targets
  are fooled on a few classes only, while build_hybrid_splits needs val + test + 1 sources in
  every class and the paper's class-balance tolerance; the planted files meet both every time.
  `dvc commit -f generate_adversarial` records them, so DVC sees the pipeline as complete.
- real again: build_hybrid_splits (with the Great Expectations suite), train@resnet50,
  train@vgg19bn, train@shufflenetv2, train@repvgg_a2 (full width, one step of 100 images),
  eval_mixed and report.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, STAGES, assert_lock_lists_every_stage, copy_checkout, pipeline_env

# Hydra overrides that shrink image counts and epochs, and nothing else. Every training stage
# still does one full step at the paper's batch size (100 for targets and defended models);
# the evaluation and attack sets are as small as a class-stratified draw allows, since at full
# width every forward pass costs.
SHRINK: dict[str, object] = {
    "targets.train_images": 100, "targets.test_images": 20, "targets.epochs": 1,
    # a barely trained target gets ~10% right: ~10 images for the GAN's step, ~2 to evaluate
    "gan.train_images": 100, "gan.eval_images": 20, "gan.epochs": 1,
    "adversarial.train_images": 20, "adversarial.test_images": 10,
    # 8 planted sources per class: 1 val + 2 test + 5 train pairs = 100 training images
    "hybrid.val_per_class": 1, "hybrid.test_per_class": 2,
    "train.epochs.resnet50": 1, "train.epochs.vgg19bn": 1,
    "train.epochs.shufflenetv2": 1, "train.epochs.repvgg_a2": 1,
    # the test split holds 20 real + 20 adversarial images; 20 gives 1, 1 and 2 AEs per draw
    "eval_mixed.n_images": 20,
    # the robustness study: one extra seed (conftest.STAGES), attacks of a few steps on 4 images
    "seeds.extra": [1], "robustness.n_images": 4, "robustness.pgd_steps": 2, "robustness.pgd_check_steps": 3,
    "robustness.autoattack.apgd_steps": 2,
    "robustness.autoattack.apgdt_steps": 2, "robustness.autoattack.fab_steps": 2,
    "robustness.autoattack.square_queries": 5, "adaptive.train_images": 20, "adaptive.eval_images": 4,
}
# Every training and GAN stage runs data-parallel under torchrun with two processes (Gloo on this
# CPU): the paper's configuration is what runs on several GPUs (docs/gpu.md).
DIST = ["dist.nproc_per_node=2"]
PLANT_TRAIN, PLANT_TEST = 6, 2  # planted sources per class from CIFAR-10 train and test
PAPER_TARGETS = ["resnet56", "vgg19bn", "mobilenetv2", "shufflenetv2", "repvgg_a2"]
PAPER_MODELS = ["resnet50", "vgg19bn", "shufflenetv2", "repvgg_a2"]


def run(cmd: list[str], cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    """conftest.run, with OpenMP threads that sleep rather than spin while they wait: beside
    another busy process on 2 cores, spinning made one full-width forward pass 200 times
    slower (measured: 2.5 s against 14 ms for ShuffleNetV2 on 2 images)."""
    env = {"OMP_WAIT_POLICY": "PASSIVE", "DVC_NO_ANALYTICS": "1", **pipeline_env()}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n"
                             f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def compose(root: Path, overrides: list[str]) -> dict:
    """params.yaml composed exactly as `dvc exp run -S ...` composes it in `root`."""
    from dvc.utils.hydra import compose_and_dump

    out = root / "params.yaml"
    compose_and_dump(out, str((root / "conf").resolve()), None, "config", str(root.resolve()), overrides)
    return yaml.safe_load(out.read_text())


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def shrink_overrides(source: Path | None = None) -> list[str]:
    src = [f"data.source={source}"] if source else []
    return ["scale=paper", *src, *(f"{k}={json.dumps(v).replace(' ', '')}" for k, v in SHRINK.items())]


# --- the composed configuration ---------------------------------------------------------------


def test_overrides_shrink_only_image_counts_and_epochs(tmp_path):
    (tmp_path / "conf").symlink_to(REPO / "conf")
    paper = flatten(compose(tmp_path, ["scale=paper"]))
    dry = flatten(compose(tmp_path, shrink_overrides()))
    assert dry.keys() == paper.keys(), sorted(dry.keys() ^ paper.keys())
    changed = {k for k in paper if dry[k] != paper[k]}
    assert changed == set(SHRINK), sorted(changed ^ set(SHRINK))
    for k in SHRINK:
        if isinstance(paper[k], list):  # fewer seeds: a sublist
            assert dry[k] and set(dry[k]) < set(paper[k]), (k, dry[k], paper[k])
        else:
            assert isinstance(paper[k], int) and 0 < dry[k] < paper[k], (k, dry[k], paper[k])


def test_paper_scale_is_the_papers_recipe(tmp_path):
    """What the dry run keeps is the paper's: widths, batches, optimiser, GAN, k grid, models."""
    (tmp_path / "conf").symlink_to(REPO / "conf")
    p = compose(tmp_path, ["scale=paper"])
    assert p["scale_info"]["name"] == "paper"
    assert p["targets"]["models"] == PAPER_TARGETS and p["train"]["models"] == PAPER_MODELS
    for s in ("targets", "train"):
        assert (p[s]["width"], p[s]["batch_size"], p[s]["lr"], p[s]["weight_decay"]) == (1.0, 100, 0.001, 0.0005)
    assert (p["targets"]["train_images"], p["targets"]["test_images"]) == (50000, 10000)
    assert p["train"]["epochs"] == {"resnet50": 99, "vgg19bn": 53, "shufflenetv2": 99, "repvgg_a2": 99}
    g = p["gan"]
    assert (g["gen_width"], g["gen_res_blocks"], g["disc_width"], g["batch_size"], g["eps_255"]) == (32, 4, 32, 128, 8)
    assert (g["train_images"], g["epochs"]) == (50000, 60)
    a = p["adversarial"]
    assert (a["k_min"], a["k_max"], a["k_step"]) == (0.1, 1.0, 0.1)
    # per target, disjoint: the five targets attack every CIFAR-10 image once
    assert (a["train_images"] * len(PAPER_TARGETS), a["test_images"] * len(PAPER_TARGETS)) == (50000, 10000)
    assert g["conditional"] is True  # II-A: G takes x and the target label t
    h = p["hybrid"]
    assert (h["val_per_class"], h["test_per_class"], sum(h["train_cap_per_class"].values())) == (500, 500, 20756)
    assert (p["eval_mixed"]["n_images"], p["eval_mixed"]["adv_fractions"]) == (1000, [0.03, 0.05, 0.10])
    assert p["gan"]["targets"] == p["adversarial"]["targets"] == p["hybrid"]["targets"] == PAPER_TARGETS
    assert p["eval_mixed"]["models"] == PAPER_MODELS


# --- every stage, through dvc ------------------------------------------------------------------


def plant_adversarial(root: Path, targets: list[str], grid: np.ndarray, seed: int = 0) -> None:
    """Replace data/adversarial/<target>.npz by bounded perturbations of real CIFAR-10 images,
    PLANT_TRAIN + PLANT_TEST sources per class, with the metadata generate_adversarial writes."""
    from advhybrid.attacks.quality import image_quality
    from advhybrid.io import load_npz, save_npz

    raw = [load_npz(root / f"data/raw/cifar10/{s}.npz", ["images", "labels"]) for s in ("train", "test")]
    split, index = [], []  # the first sources of every class, train split first (sorted by source id)
    for s, per_class in ((0, PLANT_TRAIN), (1, PLANT_TEST)):
        for c in range(10):
            idx = np.flatnonzero(raw[s]["labels"] == c)[:per_class]
            split += [s] * len(idx)
            index += idx.tolist()
    split, index = np.array(split, np.uint8), np.array(index, np.int64)
    clean = np.stack([raw[s]["images"][i] for s, i in zip(split, index)])
    labels = np.array([raw[s]["labels"][i] for s, i in zip(split, index)], np.int64)
    for t, name in enumerate(targets):
        g = np.random.default_rng([seed, t])
        k = g.choice(grid, len(clean)).astype(np.float32)
        amp = np.maximum(1, np.round(8 * k)).astype(np.int16)[:, None, None, None]  # |k G(x)| <= 8k/255
        noise = g.integers(1, 9, clean.shape) * g.choice([-1, 1], clean.shape)
        adv = np.clip(clean.astype(np.int16) + np.clip(noise, -amp, amp), 0, 255).astype(np.uint8)
        same = (adv == clean).reshape(len(adv), -1).all(1)
        adv[same, 0, 0, 0] ^= 1  # never byte-identical to the source, whatever the clipping
        target_class = (labels + g.integers(1, 10, len(labels))) % 10
        save_npz(root / f"data/adversarial/{name}.npz", images=adv, labels=labels, source_split=split,
                 source_index=index, target_class=target_class, k=k, pred=target_class,
                 **image_quality(adv, clean, "cpu"))


@pytest.fixture(scope="module")
def paper_dry_repo(tmp_path_factory, shared_cifar_archive) -> dict:
    """A temporary checkout in which every stage ran at the shrunken paper configuration."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    root = copy_checkout(tmp_path_factory.mktemp("paper_dry") / "repo")
    params = compose(root, [*shrink_overrides(shared_cifar_archive), *DIST])

    def step(name: str, cmd: list[str]) -> None:
        t = time.perf_counter()
        run(cmd, root)
        timings[name] = round(time.perf_counter() - t, 1)

    step("repro to generate_adversarial", ["dvc", "repro", "generate_adversarial"])
    upstream_outs = [f"data/raw/cifar10/{s}.npz" for s in ("train", "test")] + \
        [f"models/{d}/{n}.pt" for d in ("targets", "gan") for n in PAPER_TARGETS] + \
        [f"data/adversarial/{n}.npz" for n in PAPER_TARGETS] + \
        [f"metrics/{m}.json" for m in ("targets", "gan", "adversarial")]
    missing = [p for p in upstream_outs if not (root / p).is_file()]
    assert not missing, f"the real upstream stages did not write {missing}"
    real_adversarial = json.loads((root / "metrics/adversarial.json").read_text())

    a = params["adversarial"]
    from advhybrid.attacks.ksearch import k_grid

    plant_adversarial(root, a["targets"], k_grid(a["k_min"], a["k_max"], a["k_step"]))
    step("dvc commit (planted AEs)", ["dvc", "commit", "-f", "generate_adversarial"])
    step("repro the rest", ["dvc", "repro"])
    timings["total"] = round(time.perf_counter() - t0, 1)
    print(f"\npaper dry run timings (s): {timings}")
    return {"root": root, "params": params, "real_adversarial": real_adversarial, "timings": timings}


@pytest.mark.slow
def test_every_stage_runs_and_dvc_sees_it_complete(paper_dry_repo):
    root = paper_dry_repo["root"]
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert_lock_lists_every_stage(lock)
    assert json.loads(run(["dvc", "status", "--json"], root).stdout) == {}
    on_disk = yaml.safe_load((root / "params.yaml").read_text())
    assert on_disk == paper_dry_repo["params"], "dvc repro must use the composed params.yaml as is"
    assert on_disk["scale_info"]["name"] == "paper"
    report = (root / "reports" / "results.md").read_text()
    assert "scale=paper" in report
    for name in ("ResNet-50", "VGG19_bn", "ShuffleNetV2", "RepVGG_a2"):
        assert f"| {name} |" in report


@pytest.mark.slow
def test_every_training_and_gan_stage_ran_under_torchrun_with_two_processes(paper_dry_repo):
    lock = yaml.safe_load((paper_dry_repo["root"] / "dvc.lock").read_text())["stages"]
    launched = {name for name in STAGES if "torch.distributed.run" in lock[name]["cmd"]}  # not main's stale seed@2
    assert launched == {"train_targets", "train_gan", "train_fast_at", *(f"{s}@{m}" for s in ("train", "control")
                                                                          for m in PAPER_MODELS), "seed@1"}, launched
    assert all("--nproc_per_node=2 " in lock[name]["cmd"] and lock[name]["params"]["params.yaml"]["dist"] ==
               {"nproc_per_node": 2} for name in launched)


@pytest.mark.slow
def test_real_attack_stages_report_every_target(paper_dry_repo):
    import torch

    root = paper_dry_repo["root"]
    gan = json.loads((root / "metrics/gan.json").read_text())
    assert sorted(gan) == sorted(PAPER_TARGETS)
    g = paper_dry_repo["params"]["gan"]
    for name in PAPER_TARGETS:  # the paper's generator, not a narrowed one
        arch = torch.load(root / f"models/gan/{name}.pt", map_location="cpu", weights_only=True)["arch"]
        assert (arch["width"], arch["n_res"], arch["eps"]) == (g["gen_width"], g["gen_res_blocks"], g["eps_255"] / 255)
    adv = paper_dry_repo["real_adversarial"]
    assert sorted(adv) == sorted(PAPER_TARGETS)
    assert all(adv[t]["n_images"] == SHRINK["adversarial.train_images"] + SHRINK["adversarial.test_images"]
               for t in PAPER_TARGETS)


@pytest.mark.slow
def test_models_are_the_papers_full_width_architectures(paper_dry_repo):
    import torch

    from advhybrid.models import build_model, count_parameters

    root = paper_dry_repo["root"]
    targets = json.loads((root / "metrics/targets.json").read_text())
    for group, names, metrics in (("targets", PAPER_TARGETS, lambda n: targets[n]),
                                  ("defended", PAPER_MODELS,
                                   lambda n: json.loads((root / f"metrics/train/{n}.json").read_text()))):
        for name in names:
            full = count_parameters(build_model(name, num_classes=10, width=1.0))
            assert metrics(name)["params"] == full, (group, name)
            ckpt = torch.load(root / f"models/{group}/{name}.pt", map_location="cpu", weights_only=True)
            assert (ckpt["name"], ckpt["width"]) == (name, 1.0)
    hybrid = json.loads((root / "metrics/hybrid.json").read_text())
    per_class = PLANT_TRAIN + PLANT_TEST - SHRINK["hybrid.val_per_class"] - SHRINK["hybrid.test_per_class"]
    assert hybrid["splits"]["train"]["real"] == hybrid["splits"]["train"]["adversarial"] == 10 * per_class
    mixed = json.loads((root / "metrics/eval_mixed.json").read_text())
    assert sorted(mixed["models"]) == sorted(PAPER_MODELS)
    assert mixed["draws"] == paper_dry_repo["params"]["eval_mixed"]["draws"] == 20


def test_every_robustness_study_param_is_reachable_with_dash_s(tmp_path):
    """`dvc exp run -S key=value` composes through Hydra: each new section's keys must take overrides."""
    (tmp_path / "conf").symlink_to(REPO / "conf")
    overrides = {"fast_at.eps_255": 4, "fast_at.alpha_255": 5, "seeds.extra": [3], "robustness.n_images": 700,
                 "robustness.pgd_restarts": 3, "robustness.autoattack.square_queries": 5000,
                 "adaptive.models": ["vgg19bn"], "adaptive.eval_images": 300}
    cli = [f"{k}={json.dumps(v).replace(' ', '')}" for k, v in overrides.items()]
    p = compose(tmp_path, ["scale=reference", *cli])
    for key, value in overrides.items():
        node = p
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    # interpolations follow the sections they name
    assert p["robustness"]["models"] == p["train"]["models"] and p["robustness"]["fast_at_model"] == "resnet50"
    assert p["adaptive"]["k_step"] == p["adversarial"]["k_step"]
