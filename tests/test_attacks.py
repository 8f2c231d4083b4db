"""The GAN attack (II-B): generator bound, target label t, k search, image quality, and the
train_gan / generate_adversarial stages on a tiny synthetic workspace."""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from advhybrid.attacks import advgan
from advhybrid.attacks.advgan import (
    GanConfig, Generator, GeneratorMismatchError, apply_perturbation, attack_loss, load_generator, margin_loss,
    second_class, train_generator, untargeted_margin_loss,
)
from advhybrid.attacks.ksearch import KGridError, evaluate_at_k, k_grid, k_search_batch, run_k_search
from advhybrid.data.subset import disjoint_stratified_slices
from advhybrid.attacks.quality import image_quality, ssim
from advhybrid.data.subset import stratified_subset
from advhybrid.device import to_float
from advhybrid.io import load_npz, save_npz
from advhybrid.params import load_section
from conftest import REPO, stage_args, synthetic_cifar

CPU = torch.device("cpu")


def tiny_target(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # Spatial features straight into the classifier: small margins, many classes predicted,
    # so a random generator already flips some images at some k and not others.
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10)).eval()


@torch.no_grad()
def own_labels(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Labels equal to the model's predictions: every image counts as correctly classified."""
    return model(to_float(torch.as_tensor(images))).argmax(1).numpy()


TINY = GanConfig(eps=16 / 255, gen_width=4, gen_res_blocks=1, disc_width=4, epochs=2, batch_size=16, log_every=1,
                 schedule="constant")


# ----------------------------------------------------------------------------- generator, t


def test_generator_output_never_exceeds_eps_even_when_saturated():
    G = Generator(eps=8 / 255, width=4, n_res=1)
    with torch.no_grad():
        for p in G.parameters():
            p.mul_(50)  # push tanh deep into saturation
    x = torch.rand(8, 3, 32, 32)
    delta = G(x, torch.arange(8))
    assert delta.abs().max() <= 8 / 255 + 1e-7
    assert delta.abs().max() > 7.5 / 255  # saturated, so the bound is what stopped it


@pytest.mark.parametrize("output", ["tanh", "hardtanh"])
def test_generator_is_conditioned_on_the_target_label(output):
    torch.manual_seed(0)
    G = Generator(eps=8 / 255, width=4, n_res=1, output=output).eval()
    x = torch.rand(1, 3, 32, 32).repeat(10, 1, 1, 1)
    with torch.no_grad():
        delta = G(x, torch.arange(10))  # one image, ten target labels
    assert delta.abs().max() <= 8 / 255 + 1e-7
    assert len({d.sum().item() for d in delta}) == 10, "t must change the perturbation"
    with pytest.raises(ValueError, match=r"G\(x, t\)"):
        G(x)


def test_unconditioned_generator_ignores_t():
    G = Generator(eps=8 / 255, width=4, n_res=1, num_classes=0).eval()
    x = torch.rand(1, 3, 32, 32).repeat(3, 1, 1, 1)
    with torch.no_grad():
        assert torch.equal(G(x, torch.arange(3)), G(x))


def test_adversarial_image_stays_in_unit_range():
    x = torch.cat([torch.zeros(2, 3, 32, 32), torch.ones(2, 3, 32, 32), torch.rand(2, 3, 32, 32)])
    delta = torch.full_like(x, 0.5) * torch.where(torch.rand_like(x) > 0.5, 1.0, -1.0)
    for k in (0.3, 1.0, 2.0):
        xa = apply_perturbation(x, delta, k)
        assert xa.min() >= 0 and xa.max() <= 1


def test_second_class_is_the_second_most_likely_class():
    logits = torch.randn(64, 10)
    order = logits.argsort(dim=1, descending=True)
    assert torch.equal(second_class(logits), order[:, 1])
    assert (second_class(logits) != logits.argmax(1)).all()


def test_margin_loss_is_zero_once_t_leads_by_kappa():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    t = torch.tensor([1, 1])
    # Row 0: t leads by 4 >= kappa 2 -> clamped to -2. Row 1: others lead by 3 -> 3.
    assert margin_loss(logits, t, kappa=2.0).item() == pytest.approx((-2 + 3) / 2)


def test_untargeted_margin_is_zero_once_a_wrong_class_leads_by_kappa():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    y = torch.tensor([0, 0])
    # Row 0: class 1 leads the true class by 5 >= kappa 2 -> -2. Row 1: y leads by 2 -> 2.
    assert untargeted_margin_loss(logits, y, kappa=2.0).item() == pytest.approx((-2 + 2) / 2)


def test_attack_objective_both_is_the_sum_of_the_two_margins():
    logits, y, t = torch.randn(16, 10), torch.randint(0, 10, (16,)), torch.randint(0, 10, (16,))
    both = attack_loss(logits, y, t, "both", 5.0)
    parts = attack_loss(logits, y, t, "targeted", 5.0) + attack_loss(logits, y, t, "untargeted", 5.0)
    assert both.item() == pytest.approx(parts.item())


# ----------------------------------------------------------------------------- k grid and search


def test_k_grid_is_inclusive_despite_float_steps():
    assert np.allclose(k_grid(0.1, 1.0, 0.1), np.arange(1, 11) / 10)
    assert len(k_grid(0.05, 0.3, 0.05)) == 6
    assert list(k_grid(0.5, 0.5, 0.1)) == [0.5]


@pytest.mark.parametrize("k_min,k_max,k_step,fragment", [
    (0.5, 0.1, 0.1, "k_max must be >= k_min"),
    (0.1, 1.0, 0.0, "k_step must be > 0"),
    (0.1, 1.0, -0.1, "k_step must be > 0"),
    (0.0, 1.0, 0.1, "k_min must be > 0"),
    ("a", 1.0, 0.1, "must all be numbers"),
])
def test_k_grid_rejects_empty_or_invalid_grids_naming_the_params(k_min, k_max, k_step, fragment):
    with pytest.raises(KGridError, match=fragment) as e:
        k_grid(k_min, k_max, k_step, where="adversarial")
    assert "adversarial.k_min" in str(e.value) and "adversarial.k_step" in str(e.value)


@torch.no_grad()
def reference_k_search(target, G, images, labels, grid):
    """A plain per-image loop: the definition the batched search must reproduce."""
    out = {}
    for i in range(len(images)):
        x = torch.as_tensor(images[i : i + 1]).permute(0, 3, 1, 2).float() / 255
        logits = target(x)
        if logits.argmax(1).item() != labels[i]:
            continue  # misclassified: not attacked
        d = G(x, second_class(logits))
        for k in grid:
            xa = torch.round(torch.clamp(x + float(k) * d, 0, 1) * 255) / 255
            p = target(xa).argmax(1).item()
            if p != labels[i]:
                out[i] = (float(k), p)
                break
    return out


def test_k_search_returns_the_smallest_successful_k_and_skips_misclassified_images(monkeypatch):
    # bf16 autocast on (as on CPUs with native bf16 and on CUDA): the k search must still decide
    # each label in fp32, like the per-image fp32 reference below.
    monkeypatch.setenv("ADVHYBRID_CPU_BF16", "1")
    target = tiny_target()
    torch.manual_seed(1)
    G = Generator(eps=0.5, width=4, n_res=1).eval()
    images, _ = synthetic_cifar(3, seed=1)
    labels = own_labels(target, images)
    labels[::3] = (labels[::3] + 1) % 10  # a third misclassified: they must be excluded
    grid = k_grid(0.1, 1.0, 0.1)

    r = run_k_search(target, G, images, labels, grid, CPU, batch_size=7)
    ref = reference_k_search(target, G, images, labels, grid)

    assert 0 < len(ref) < r.n_attacked, "fixture should mix successes and failures"
    assert len(set(np.round(r.k, 3))) > 1, "fixture should need several k values"
    assert r.n_attacked == (np.arange(len(labels)) % 3 != 0).sum()
    assert sorted(r.index.tolist()) == sorted(ref)
    for i, k, p in zip(r.index, r.k, r.pred):
        assert k == pytest.approx(ref[i][0]) and p == ref[i][1]
    assert (r.pred != r.labels).all() and (r.index % 3 != 0).all()


def test_k_search_images_are_misclassified_when_reloaded_from_npz(tmp_path):
    target = tiny_target()
    torch.manual_seed(1)
    G = Generator(eps=0.5, width=4, n_res=1).eval()
    images, _ = synthetic_cifar(2, seed=2)
    labels = own_labels(target, images)
    r = run_k_search(target, G, images, labels, k_grid(0.1, 1.0, 0.1), CPU)
    assert len(r.k) > 0
    save_npz(tmp_path / "adv.npz", images=r.images, k=r.k)
    back = load_npz(tmp_path / "adv.npz", ["images", "k"])
    assert back["images"].dtype == np.uint8 and np.array_equal(back["images"], r.images)
    assert np.array_equal(back["k"], r.k)
    assert np.array_equal(own_labels(target, back["images"]), r.pred)
    linf = np.abs(back["images"].astype(int) - images[r.index].astype(int)).max(axis=(1, 2, 3))
    assert (linf <= np.ceil(r.k * 0.5 * 255 + 0.5)).all()


def test_k_search_batch_uses_each_images_own_perturbation():
    target, G = tiny_target(), Generator(eps=0.5, width=4, n_res=1).eval()
    images, _ = synthetic_cifar(1, seed=3)
    labels = own_labels(target, images)
    grid = torch.tensor([0.5, 1.0])
    whole = k_search_batch(target, G, torch.as_tensor(images), torch.as_tensor(labels), grid, CPU)
    half = k_search_batch(target, G, torch.as_tensor(images[:5]), torch.as_tensor(labels[:5]), grid, CPU)
    assert torch.equal(whole["k_idx"][:5], half["k_idx"])


# ----------------------------------------------------------------------------- quality


def test_ssim_is_one_for_identical_images_symmetric_and_falls_with_noise():
    images, _ = synthetic_cifar(1, seed=4)
    x = to_float(torch.as_tensor(images))
    assert torch.allclose(ssim(x, x), torch.ones(len(x)), atol=1e-5)
    g = torch.Generator().manual_seed(0)
    noisy = [(x + s * torch.randn(x.shape, generator=g)).clamp(0, 1) for s in (0.02, 0.05, 0.2)]
    scores = torch.stack([ssim(x, n) for n in noisy])
    assert (scores[:-1] > scores[1:]).all()
    assert torch.allclose(ssim(x, noisy[1]), ssim(noisy[1], x), atol=1e-6)


def test_image_quality_measures_l2_and_linf_in_unit_range():
    clean = np.full((2, 32, 32, 3), 100, np.uint8)
    adv = clean.copy()
    adv[0, 0, 0, 0] += 8  # one pixel by 8 levels
    adv[1] += 2  # every pixel by 2 levels
    q = image_quality(adv, clean)
    assert q["linf"] == pytest.approx([8 / 255, 2 / 255])
    assert q["l2"] == pytest.approx([8 / 255, 2 / 255 * np.sqrt(32 * 32 * 3)], rel=1e-5)
    assert q["ssim"][0] > q["ssim"][1] and q["ssim"].dtype == np.float32


# ----------------------------------------------------------------------------- training


def test_short_training_lowers_the_adversarial_loss():
    target = tiny_target()
    images, _ = synthetic_cifar(6, seed=5)
    labels = own_labels(target, images)
    G, history = train_generator(target, images, labels, replace(TINY, epochs=4, w_adv=10.0), CPU)
    adv = [row["g_adv"] for row in history]
    assert np.mean(adv[-4:]) < np.mean(adv[:4]) - 1e-3
    assert {"step", "epoch", "lr_g", "d_loss", "g_gan", "g_adv", "g_hinge"} <= set(history[0])
    assert not G.training


def test_training_resumes_from_its_checkpoint_and_ignores_one_from_another_config(tmp_path, monkeypatch, capsys):
    target = tiny_target()
    images, _ = synthetic_cifar(3, seed=6)
    labels = own_labels(target, images)
    G_full, h_full = train_generator(target, images, labels, TINY, CPU)

    ckpt = tmp_path / "ckpt.pt"
    real_step, calls = advgan._gan_step, {"n": 0}
    steps_per_epoch = -(-len(images) // TINY.batch_size)

    def crash_in_epoch_2(*a, **kw):
        calls["n"] += 1
        if calls["n"] > steps_per_epoch:
            raise KeyboardInterrupt
        return real_step(*a, **kw)

    monkeypatch.setattr(advgan, "_gan_step", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_generator(target, images, labels, TINY, CPU, checkpoint=ckpt)
    monkeypatch.setattr(advgan, "_gan_step", real_step)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1

    G_res, h_res = train_generator(target, images, labels, TINY, CPU, checkpoint=ckpt)
    assert "resuming" in capsys.readouterr().out
    assert h_res == h_full
    for a, b in zip(G_full.state_dict().values(), G_res.state_dict().values()):
        assert torch.equal(a, b)

    _, h_more = train_generator(target, images, labels, replace(TINY, epochs=3), CPU, checkpoint=ckpt)
    assert "after epoch 2/3" in capsys.readouterr().out and h_more[: len(h_full)] == h_full

    train_generator(target, images, labels, replace(TINY, lr_g=5e-4), CPU, checkpoint=ckpt)
    assert "ignoring" in capsys.readouterr().out


def test_a_gan_checkpoint_of_this_run_missing_entries_names_the_file_and_what_it_lacks(tmp_path):
    from advhybrid.io import load_checkpoint, save_torch

    target = tiny_target()
    images, _ = synthetic_cifar(2, seed=6)
    labels = own_labels(target, images)
    ckpt = tmp_path / "ckpt.pt"
    train_generator(target, images, labels, TINY, CPU, checkpoint=ckpt)
    state = load_checkpoint(ckpt)
    del state["D"]
    save_torch(ckpt, state)
    with pytest.raises(ValueError, match=r"ckpt.pt: checkpoint lacks D \(it has .*delete it to start that run afresh"):
        train_generator(target, images, labels, TINY, CPU, checkpoint=ckpt)


def test_one_cycle_run_is_not_resumed_with_more_epochs(tmp_path, capsys):
    # The one-cycle schedule spans the whole run: two epochs of a 3-epoch run are not the first
    # two of a 2-epoch run, so the key must include epochs there (and only there).
    target = tiny_target()
    images, _ = synthetic_cifar(2, seed=6)
    labels = own_labels(target, images)
    ckpt = tmp_path / "ckpt.pt"
    cyc = replace(TINY, schedule="onecycle")
    _, hist = train_generator(target, images, labels, cyc, CPU, checkpoint=ckpt)
    lrs = [row["lr_g"] for row in hist]
    assert max(lrs) <= cyc.lr_g and lrs[-1] < 0.01 * cyc.lr_g  # annealed to the end of the cycle
    capsys.readouterr()
    train_generator(target, images, labels, replace(cyc, epochs=3), CPU, checkpoint=ckpt)
    assert "ignoring" in capsys.readouterr().out


def test_perturbation_cosine_is_one_for_a_universal_pattern_and_the_pairwise_mean_otherwise():
    target = tiny_target()
    images, _ = synthetic_cifar(2, seed=7)
    labels = own_labels(target, images)

    class Universal(nn.Module):
        def forward(self, x, t=None):
            return torch.full_like(x, 0.01)

    assert evaluate_at_k(target, Universal(), images, labels, 1.0, CPU)["perturbation_cosine"] == pytest.approx(1.0)
    torch.manual_seed(0)
    G = Generator(eps=0.5, width=4, n_res=1).eval()
    m = evaluate_at_k(target, G, images, labels, 1.0, CPU, batch_size=7)
    with torch.no_grad():
        x = to_float(torch.as_tensor(images))
        u = torch.nn.functional.normalize(G(x, second_class(target(x))).flatten(1).double(), dim=1)
    n = len(u)
    brute = ((u @ u.T).sum() - n) / (n * (n - 1))
    assert m["perturbation_cosine"] == pytest.approx(brute.item(), abs=1e-5)


@pytest.mark.parametrize("key,value", [("objective", "sideways"), ("schedule", "cosine"), ("output", "sigmoid")])
def test_gan_config_rejects_unknown_choices_naming_the_key(tmp_path, key, value):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"gan": gan_params(**{key: value})}))
    with pytest.raises(Exception, match=f"gan.{key}' must be one of"):
        GanConfig.from_params(load_section("gan", tmp_path / "params.yaml"))


def test_disjoint_slices_are_disjoint_stratified_and_cover_everything_when_they_fill_the_split():
    labels = np.repeat(np.arange(10), 12)
    slices = disjoint_stratified_slices(labels, 20, 6, seed=3)
    assert len(slices) == 6 and all(len(s) == 20 for s in slices)
    assert all((np.bincount(labels[s], minlength=10) == 2).all() for s in slices)
    assert len(np.unique(np.concatenate(slices))) == 120
    assert not np.array_equal(slices[0], disjoint_stratified_slices(labels, 20, 6, seed=4)[0])
    with pytest.raises(ValueError, match="need 140 items"):
        disjoint_stratified_slices(labels, 20, 7, seed=3)


def test_gan_config_rejects_unknown_gan_loss(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"gan": gan_params(gan_loss="wgan")}))
    with pytest.raises(Exception, match="gan.gan_loss"):
        GanConfig.from_params(load_section("gan", tmp_path / "params.yaml"))


# ----------------------------------------------------------------------------- stages


TARGETS = ["vgg19bn", "mobilenetv2"]


def gan_params(**over) -> dict:
    p = dict(targets=TARGETS, train_images=30, eval_images=20, k_default=1.0, eps_255=32, conditional=True,
             output="tanh", gen_width=4, gen_res_blocks=1, disc_width=4, gan_loss="lsgan", epochs=1,
             batch_size=20, lr_g=1e-3, lr_d=1e-3, schedule="onecycle", beta1=0.5, beta2=0.999,
             objective="both", w_gan=0.1, d_every=1, w_adv=1.0, w_hinge=0.0, kappa=10.0, hinge_bound=1.74,
             log_every=1, seed=0)
    return p | over


def adv_params(**over) -> dict:
    p = dict(targets=TARGETS, k_min=0.25, k_max=1.0, k_step=0.25, train_images=10, test_images=10,
             batch_size=16, seed=0)
    return p | over


def load_stage(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "src" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_stage(name: str) -> None:
    """The stage's main() in the working directory, with dvc.yaml's arguments, on the CPU."""
    load_stage(name).main(["--device", "cpu", *stage_args(name)])


def write_params(ws: Path, **adv_over) -> None:
    (ws / "params.yaml").write_text(yaml.safe_dump({"gan": gan_params(), "adversarial": adv_params(**adv_over)}))


@torch.no_grad()
def with_data_batchnorm(model: nn.Module, images: np.ndarray) -> nn.Module:
    """Set BatchNorm statistics from data: an untrained net with its initial 0/1 statistics
    predicts one class whatever the input and no perturbation moves it."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass gives the batch's statistics
    model.train()(to_float(torch.as_tensor(images)))
    return model.eval()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Two tiny untrained targets. A third of the labels are each target's own predictions, so
    each gets a third right; the last third keeps the true labels, so every class is present
    for the stratified subsets. Generators trained by the stage."""
    from advhybrid.models import build_model, save_model

    ws = tmp_path_factory.mktemp("ws")
    models = {}
    for i, name in enumerate(TARGETS):
        torch.manual_seed(i)
        models[name] = with_data_batchnorm(build_model(name, 10, width=0.0625), synthetic_cifar(4, seed=14)[0])
        save_model(ws / f"models/targets/{name}.pt", models[name], name, 10, 0.0625)
    for split, n in (("train", 9), ("test", 6)):
        images, labels = synthetic_cifar(n, seed=10 + n)
        labels[0::3] = own_labels(models["vgg19bn"], images)[0::3]
        labels[1::3] = own_labels(models["mobilenetv2"], images)[1::3]
        save_npz(ws / f"data/raw/cifar10/{split}.npz", images=images, labels=labels,
                 classes=np.array([f"c{i}" for i in range(10)]))
    write_params(ws)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        run_stage("train_gan")
    return ws


@pytest.fixture
def ws(workspace, tmp_path, monkeypatch) -> Path:
    """A private copy of the trained workspace, as the working directory."""
    dst = tmp_path / "ws"
    shutil.copytree(workspace, dst)
    monkeypatch.chdir(dst)
    return dst


def attack_slice(split: str, n: int, i_target: int) -> np.ndarray:
    """The images generate_adversarial attacks with target number `i_target` (cwd = workspace)."""
    labels = load_npz(f"data/raw/cifar10/{split}.npz")["labels"]
    return disjoint_stratified_slices(labels, n, len(TARGETS), seed=0)[i_target]


def n_correct(name: str, split: str, n: int, idx: np.ndarray | None = None) -> int:
    """Images of the stages' n-image subset of `split` (or of `idx`) that `name` gets right."""
    from advhybrid.models import load_model

    raw = load_npz(f"data/raw/cifar10/{split}.npz")
    idx = stratified_subset(raw["labels"], n, seed=0) if idx is None else idx
    model, _ = load_model(f"models/targets/{name}.pt")
    return int((own_labels(model, raw["images"][idx]) == raw["labels"][idx]).sum())


STAGE_OUTS = ["data/adversarial", "metrics/adversarial.json", "plots/adversarial"]


def test_train_gan_writes_generators_bound_to_their_target_metrics_and_curves(ws):
    metrics = yaml.safe_load((ws / "metrics/gan.json").read_text())
    assert set(metrics) == set(TARGETS)
    m = metrics["vgg19bn"]
    assert m["n_attacked"] == n_correct("vgg19bn", "test", 20) and 0 <= m["untargeted_success"] <= 1
    assert 0 < m["mean_linf"] <= 32 / 255 + 0.5 / 255
    for name in TARGETS:
        G, state = load_generator(f"models/gan/{name}.pt", name, None)
        assert state["target"] == name and len(state["target_sha256"]) == 64
        header = (ws / f"plots/gan/{name}.csv").read_text().splitlines()[0]
        assert header == "step,epoch,lr_g,d_loss,g_gan,g_adv,g_hinge"


def test_generate_adversarial_stores_only_successes_that_still_fool_the_target(ws):
    from advhybrid.models import load_model

    run_stage("generate_adversarial")
    keys = ["images", "labels", "source_split", "source_index", "target_class", "k", "pred", "l2", "linf", "ssim"]
    adv = load_npz("data/adversarial/vgg19bn.npz", keys)
    assert adv["images"].dtype == np.uint8 and len(adv["images"]) > 0
    target, _ = load_model("models/targets/vgg19bn.pt")
    assert np.array_equal(own_labels(target, adv["images"]), adv["pred"])
    assert (adv["pred"] != adv["labels"]).all()
    assert set(np.unique(adv["k"]).round(6)) <= {0.25, 0.5, 0.75, 1.0}
    raw = {s: load_npz(f"data/raw/cifar10/{s}.npz") for s in ("train", "test")}
    src = np.stack([raw[("train", "test")[s]]["images"][i] for s, i in zip(adv["source_split"], adv["source_index"])])
    assert np.array_equal(raw["train"]["labels"][adv["source_index"][adv["source_split"] == 0]],
                          adv["labels"][adv["source_split"] == 0])
    linf = np.abs(adv["images"].astype(int) - src.astype(int)).max(axis=(1, 2, 3)) / 255
    assert np.allclose(linf, adv["linf"], atol=1e-6) and (linf <= adv["k"] * 32 / 255 + 0.5 / 255 + 1e-6).all()
    assert np.isin(adv["source_index"][adv["source_split"] == 0], attack_slice("train", 10, 0)).all()
    assert np.isin(adv["source_index"][adv["source_split"] == 1], attack_slice("test", 10, 0)).all()
    other = load_npz("data/adversarial/mobilenetv2.npz", ["source_split", "source_index"])
    ids = lambda a: set(zip(a["source_split"].tolist(), a["source_index"].tolist()))  # noqa: E731
    assert not ids(adv) & ids(other), "each source is attacked by one target only"

    metrics = yaml.safe_load(Path("metrics/adversarial.json").read_text())
    m = metrics["vgg19bn"]
    n_att = (n_correct("vgg19bn", "train", 10, attack_slice("train", 10, 0))
             + n_correct("vgg19bn", "test", 10, attack_slice("test", 10, 0)))
    assert m["n_attacked"] == n_att and m["n_success"] == len(adv["k"])
    assert m["success_rate"] == pytest.approx(len(adv["k"]) / n_att)
    rows = Path("plots/adversarial/k_hist.csv").read_text().splitlines()
    assert rows[0] == "target,k,count" and len(rows) == 1 + 4 * len(TARGETS)
    assert Path("plots/adversarial/examples.png").stat().st_size > 1000


def assert_nothing_written(ws: Path, outs: list[str]) -> None:
    assert not [o for o in outs if (ws / o).exists()], "a failed stage must leave no output"


def test_generate_adversarial_fails_clearly_on_a_missing_target_checkpoint(ws):
    (ws / "models/targets/mobilenetv2.pt").unlink()
    with pytest.raises(FileNotFoundError, match="models/targets/mobilenetv2.pt"):
        run_stage("generate_adversarial")
    assert_nothing_written(ws, STAGE_OUTS)


def test_generate_adversarial_fails_clearly_on_an_unreadable_target_checkpoint(ws):
    (ws / "models/targets/mobilenetv2.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="models/targets/mobilenetv2.pt"):
        run_stage("generate_adversarial")
    assert_nothing_written(ws, STAGE_OUTS)


def test_generate_adversarial_refuses_a_generator_trained_against_another_target(ws):
    shutil.copy(ws / "models/gan/vgg19bn.pt", ws / "models/gan/mobilenetv2.pt")
    with pytest.raises(GeneratorMismatchError, match="trained against target 'vgg19bn', not 'mobilenetv2'"):
        run_stage("generate_adversarial")
    assert_nothing_written(ws, STAGE_OUTS)


def test_generate_adversarial_refuses_a_generator_trained_against_an_older_target_checkpoint(ws):
    from advhybrid.models import build_model, save_model

    save_model(ws / "models/targets/vgg19bn.pt", build_model("vgg19bn", 10, 0.0625), "vgg19bn", 10, 0.0625)
    with pytest.raises(GeneratorMismatchError, match="sha256"):
        run_stage("generate_adversarial")
    assert_nothing_written(ws, STAGE_OUTS)


def test_generate_adversarial_refuses_slices_that_do_not_fit_naming_the_key(ws):
    write_params(ws, train_images=50)  # 2 targets x 50 > 90 training images
    with pytest.raises(Exception, match=r"adversarial.train_images'=50 per target must be in 1..45"):
        run_stage("generate_adversarial")
    assert_nothing_written(ws, STAGE_OUTS)


def test_generate_adversarial_refuses_an_empty_k_grid(ws):
    write_params(ws, k_min=0.8, k_max=0.2)
    with pytest.raises(KGridError, match="adversarial.k_max=0.2"):
        run_stage("generate_adversarial")
    assert_nothing_written(ws, STAGE_OUTS)


def test_train_gan_fails_clearly_on_a_missing_target_checkpoint(ws):
    for out in ("models/gan", "metrics/gan.json", "plots/gan"):
        shutil.rmtree(ws / out) if (ws / out).is_dir() else (ws / out).unlink()
    (ws / "models/targets/vgg19bn.pt").unlink()
    with pytest.raises(FileNotFoundError, match="models/targets/vgg19bn.pt"):
        run_stage("train_gan")
    assert_nothing_written(ws, ["models/gan", "metrics/gan.json", "plots/gan"])


def test_evaluate_at_k_skips_batches_the_target_gets_entirely_wrong():
    target = tiny_target()
    images, _ = synthetic_cifar(2, seed=8)
    labels = own_labels(target, images)
    labels[:7] = (labels[:7] + 1) % 10  # the whole first batch of 7 misclassified
    G = Generator(eps=0.5, width=4, n_res=1).eval()
    m = evaluate_at_k(target, G, images, labels, 1.0, CPU, batch_size=7)
    assert m["n_attacked"] == len(images) - 7


class _RecordsPrecision(torch.nn.Module):
    """Wraps a classifier and records the fp32 precision cuDNN and matmuls had at each forward."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.seen = inner, set()

    def forward(self, x):
        self.seen.add((torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision))
        return self.inner(x)


def test_k_search_and_fp32_labels_run_with_tf32_off_and_restore_it_after():
    """On CUDA, TF32 is cuDNN's default for fp32 convolutions: a label decided at the boundary
    under TF32 may flip in an fp32 re-check. The flag is global, so it is checked here on CPU."""
    from advhybrid.attacks.whitebox import predict_fp32
    before = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    target, G = _RecordsPrecision(tiny_target()), Generator(eps=0.5, width=4, n_res=1).eval()
    images, _ = synthetic_cifar(1, seed=3)
    labels = own_labels(target.inner, images)
    k_search_batch(target, G, torch.as_tensor(images), torch.as_tensor(labels), torch.tensor([1.0]), CPU)
    predict_fp32(target, images, CPU)
    assert target.seen == {("ieee", "ieee")}, target.seen
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before
