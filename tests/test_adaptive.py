"""adaptive_attack: train_gan's step count, per-image accuracy under attack, defended vs control
paired; tiny random classifiers on chosen random images, so each test runs in seconds."""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from advhybrid.attacks.advgan import GanConfig, train_generator
from advhybrid.attacks.ksearch import evaluate_at_k, k_grid
from advhybrid.device import to_float
from advhybrid.io import save_npz
from advhybrid.params import load_section
from conftest import REPO, stage_args

CPU = torch.device("cpu")
spec = importlib.util.spec_from_file_location("adaptive_attack", REPO / "src" / "adaptive_attack.py")
aa = importlib.util.module_from_spec(spec)
spec.loader.exec_module(aa)

GAN = dict(targets=["resnet50"], train_images=20, eval_images=10, k_default=1.0, eps_255=32, conditional=True,
           output="tanh", gen_width=4, gen_res_blocks=1, disc_width=4, gan_loss="lsgan", epochs=2, batch_size=8,
           lr_g=1e-3, lr_d=1e-3, schedule="onecycle", beta1=0.5, beta2=0.999, objective="both", w_gan=0.1,
           d_every=1, w_adv=1.0, w_hinge=0.0, kappa=10.0, hinge_bound=1.0, log_every=1, seed=0)
ADAPTIVE = dict(models=["resnet50"], train_images=20, eval_images=20, k_min=0.25, k_max=1.0, k_step=0.25, seed=0)
GRID = k_grid(0.25, 1.0, 0.25)


def tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # small margins, many classes predicted: some images flip, some not
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10)).eval()


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray) -> np.ndarray:
    return model(to_float(torch.as_tensor(images))).argmax(1).numpy()


def pick(model: nn.Module, right: int, wrong: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, `right` random images `model` labels as that class and `wrong` it labels otherwise."""
    pool = np.random.default_rng(seed).integers(0, 256, (3000, 32, 32, 3), dtype=np.uint8)
    pred, idx, labels = predict(model, pool), [], []
    for c in range(10):
        idx += [*np.flatnonzero(pred == c)[:right], *np.flatnonzero(pred != c)[c * wrong : (c + 1) * wrong]]
        labels += [c] * (right + wrong)
    assert len(idx) == 10 * (right + wrong), "the tiny model predicts some class too rarely"
    return pool[idx], np.array(labels)


class Scaled(nn.Module):
    """A stand-in generator: a fixed pattern times `scale` (0: no perturbation)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        pattern = torch.sign(torch.sin(torch.arange(x[0].numel(), dtype=x.dtype) * 7.0)).view_as(x[0])
        return self.scale * pattern.expand_as(x)


def test_an_image_wrong_clean_is_never_robust_and_robust_means_right_before_and_after():
    model = tiny(0)
    images, labels = pick(model, 2, 1, seed=1)  # a third misclassified clean
    for scale in (0.0, 32 / 255):
        o = aa.outcomes(model, Scaled(scale), images, labels, GRID, CPU, batch_size=7)
        r = aa.robust(o)
        assert (o["correct"] == (predict(model, images) == labels)).all() and (~o["correct"]).sum() == 10
        assert not r["k1"][~o["correct"]].any() and not r["k_search"][~o["correct"]].any()
        assert (o["k_idx"][~o["correct"]] == -1).all()
        with torch.no_grad():  # k = 1 by hand: the uint8-rounded x + G, clipped
            x = to_float(torch.as_tensor(images))
            adv = predict(model, ((x + Scaled(scale)(x)).clamp(0, 1) * 255).round().permute(0, 2, 3, 1).byte().numpy())
        assert (r["k1"] == (o["correct"] & (adv == labels))).all()
        assert (r["k_search"] <= r["k1"]).all()  # the grid ends at k = 1: the search finds every k = 1 success
        m = aa.kind_metrics(o, GRID, None)
        assert m["acc_k1"]["n"] == m["acc_k_search"]["n"] == len(images)
        assert m["acc_k1"]["acc"] == pytest.approx(r["k1"].mean())
        assert m["acc_k1"]["low"] <= m["acc_k1"]["acc"] <= m["acc_k1"]["high"]
        if scale == 0:
            assert m["acc_k1"]["acc"] == pytest.approx(m["clean_accuracy"], abs=1e-6)
            assert m["k1_untargeted"] == 0 and m["mean_k"] is None
        else:  # the old success rates, over correctly classified images, agree with evaluate_at_k's
            assert 0 < m["k1_untargeted"] < 1
            ref = evaluate_at_k(model, Scaled(scale), images, labels, 1.0, CPU, 7)
            assert (m["k1_untargeted"], m["k1_targeted"], m["n_attacked"]) == (
                ref["untargeted_success"], ref["targeted_success"], ref["n_attacked"])


def test_cycle_spreads_draws_evenly_and_subsamples_when_asked_for_fewer():
    counts = np.bincount(aa.cycle(np.arange(7), 24, seed=0), minlength=7)
    assert counts.sum() == 24 and set(counts) <= {3, 4}
    few = aa.cycle(np.arange(30), 8, seed=0)
    assert len(few) == len(set(few)) == 8


@pytest.mark.parametrize("n_images", [13, 50])  # fewer and more images than one train_gan epoch's draws
def test_the_adaptive_gan_takes_train_gans_steps_whatever_its_image_count(tmp_path, n_images):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"gan": GAN}))
    cfg = GanConfig.from_params(load_section("gan", tmp_path / "params.yaml"))
    model = tiny(0)
    # train_gan: gan.train_images images; a target that gets them all right keeps every one
    own = np.random.default_rng(2).integers(0, 256, (GAN["train_images"], 32, 32, 3), dtype=np.uint8)
    _, hist = train_generator(model, own, predict(model, own), cfg, CPU)
    images, labels = pick(model, 3, 2, seed=3)
    images, labels = images[:n_images], labels[:n_images]  # some misclassified
    idx, distinct = aa.training_draws(model, images, labels, aa.draws_per_epoch(cfg, GAN["train_images"]), 0,
                                      CPU, "test")
    assert (predict(model, images[idx]) == labels[idx]).all() and distinct < n_images
    _, hist_adaptive = train_generator(model, images[idx], labels[idx], cfg, CPU)
    assert hist_adaptive[-1]["step"] == hist[-1]["step"] == aa.gan_step_budget(cfg, GAN["train_images"]) == 2 * 3


def test_a_class_too_small_for_the_asked_images_names_the_key_and_the_largest_that_fits():
    labels = np.repeat(np.arange(10), 60)
    labels = np.concatenate([labels[labels != 3], np.full(51, 3)])  # cat: 51 real images, the rest 60
    with pytest.raises(aa.ParamsError, match=r"'adaptive.train_images'=580 asks up to 58 .* class 3 has 51 in "
                                              r"h/train.npz; give at most 510"):
        aa.real_subset(labels, 580, 0, "params.yaml: 'adaptive.train_images'", "h/train.npz")
    assert len(aa.real_subset(labels, 510, 0, "k", "h")) == 510  # the largest that fits
    assert len(aa.real_subset(labels, len(labels), 0, "k", "h")) == len(labels)  # all of them: no class cap


def test_training_draws_names_the_file_when_the_target_gets_nothing_right():
    model = tiny(0)
    images, labels = pick(model, 0, 1, seed=3)
    with pytest.raises(ValueError, match="train.npz.*none of the 10"):
        aa.training_draws(model, images, labels, 16, 0, CPU, "data/hybrid/train.npz")


def write_workspace(ws: Path, defended: nn.Module, jobs: int = 1) -> None:
    for split, right, wrong in (("train", 2, 1), ("test", 2, 1)):
        images, labels = pick(defended, right, wrong, seed=5 if split == "train" else 6)
        adv = np.random.default_rng(7).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)  # is_adv: never used here
        save_npz(ws / f"data/hybrid/{split}.npz", images=np.concatenate([images, adv]),
                 labels=np.concatenate([labels, np.arange(5)]), is_adv=np.r_[np.zeros(len(images), int), np.ones(5, int)])
    (ws / "params.yaml").write_text(yaml.safe_dump({"gan": GAN, "adaptive": {**ADAPTIVE, "jobs": jobs}}))


def defended_and_control() -> tuple[nn.Module, nn.Module]:
    defended = tiny(0)
    control = copy.deepcopy(defended)
    with torch.no_grad():  # the control: a perturbed copy, right and wrong on other images
        for q in control.parameters():
            q.add_(0.05 * torch.randn_like(q))
    return defended, control


def test_the_stage_reports_accuracy_under_attack_for_both_kinds_and_pairs_them(tmp_path, monkeypatch):
    defended, control = defended_and_control()
    write_workspace(tmp_path, defended)
    monkeypatch.chdir(tmp_path)
    loaded = []

    def load_target(path: str, name: str) -> tuple[nn.Module, str]:
        loaded.append(path)
        return (defended if path.startswith("models/defended/") else control), f"sha-{path}"

    monkeypatch.setattr(aa, "load_target", load_target)
    aa.main(["--device", "cpu", *stage_args("adaptive_attack")])
    assert sorted(loaded) == ["models/control/resnet50.pt", "models/defended/resnet50.pt"]
    out = json.loads(Path("metrics/adaptive.json").read_text())["resnet50"]
    assert set(out) == {"defended", "control", "paired_k1", "paired_k_search"}
    old = {"k1_untargeted", "k1_targeted", "k_search_success", "mean_k", "n_attacked", "gan_steps",
           "clean_accuracy", "perturbation_cosine"}
    for kind in ("defended", "control"):
        m = out[kind]
        assert old | {"acc_k1", "acc_k_search", "gan_train_images"} == set(m)
        assert m["gan_steps"] == 2 * 3 and 0 < m["gan_train_images"] <= ADAPTIVE["train_images"]
        for key in ("acc_k1", "acc_k_search"):  # all held-out images, not just the correctly classified
            assert set(m[key]) == {"n", "acc", "low", "high"} and m[key]["n"] == ADAPTIVE["eval_images"]
        assert m["acc_k_search"]["acc"] <= m["acc_k1"]["acc"] <= m["clean_accuracy"] < 1
    for key in ("k1", "k_search"):
        pc, d, c = out[f"paired_{key}"], out["defended"][f"acc_{key}"], out["control"][f"acc_{key}"]
        assert (pc["a"], pc["b"], pc["n"]) == ("defended", "control", ADAPTIVE["eval_images"])
        assert (pc["acc_a"], pc["acc_b"]) == pytest.approx((d["acc"], c["acc"]))
        assert pc["diff"] == pytest.approx(d["acc"] - c["acc"]) and pc["diff_low"] <= pc["diff"] <= pc["diff_high"]
        assert pc["only_a"] - pc["only_b"] == round(pc["diff"] * pc["n"]) and 0 <= pc["p_mcnemar"] <= 1
    assert Path("models/adaptive/defended_resnet50.pt").is_file() and Path("plots/adaptive/control_resnet50.csv").is_file()


@pytest.mark.integration
def test_two_jobs_write_what_one_job_writes(tmp_path, monkeypatch):
    """adaptive.jobs 2 (advhybrid.workers): each kind's GAN in its own worker process, paired and
    written here; the same files, keys and step counts as one after another."""
    defended, control = defended_and_control()
    monkeypatch.setattr(aa, "load_target", lambda path, name: (
        defended if path.startswith("models/defended/") else control, f"sha-{path}"))
    # The workers import the job function by its module's name, from src/ as DVC's run would.
    monkeypatch.syspath_prepend(str(REPO / "src"))
    monkeypatch.setitem(sys.modules, "adaptive_attack", aa)
    runs = {}
    for jobs in (1, 2):
        ws = tmp_path / f"jobs{jobs}"
        write_workspace(ws, defended, jobs)
        monkeypatch.chdir(ws)
        aa.main(["--device", "cpu", *stage_args("adaptive_attack")])
        runs[jobs] = json.loads((ws / "metrics/adaptive.json").read_text())["resnet50"]
        assert sorted(str(p.relative_to(ws)) for p in ws.rglob("*") if p.is_file() and "checkpoints" not in p.parts) == [
            *(f"data/hybrid/{split}.npz" for split in ("test", "train")), "metrics/adaptive.json",
            *(f"models/adaptive/{k}_resnet50.pt" for k in ("control", "defended")),
            "params.yaml", *(f"plots/adaptive/{k}_resnet50.csv" for k in ("control", "defended"))]
    one, two = runs[1], runs[2]
    assert list(one) == list(two) == ["defended", "control", "paired_k1", "paired_k_search"]
    for key in one:
        assert list(one[key]) == list(two[key]), key
    for kind in ("defended", "control"):
        assert one[kind]["gan_steps"] == two[kind]["gan_steps"] == 2 * 3
        assert one[kind]["acc_k1"]["n"] == two[kind]["acc_k1"]["n"] == ADAPTIVE["eval_images"]
