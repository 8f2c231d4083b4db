"""The shared training loop: augmentation, resumption, repeatability, loud failure."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advhybrid.params import ParamsError, Section
from advhybrid.training import NonFiniteLossError, TrainConfig, augment, fit
from conftest import synthetic_cifar

CPU = torch.device("cpu")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


def data(n_per_class: int = 10):
    return synthetic_cifar(n_per_class, seed=1)


def test_augment_output_is_a_padded_crop_or_its_mirror():
    x, _ = data(1)
    x = torch.as_tensor(x[:4])
    out = augment(x, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x.permute(0, 3, 1, 2).float() / 255, (4, 4, 4, 4))
    assert out.shape == (4, 3, 32, 32)
    for i in range(4):
        candidates = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_augment_varies_between_images():
    x = torch.as_tensor(data(1)[0][:1]).repeat(16, 1, 1, 1)
    out = augment(x, torch.Generator().manual_seed(0))
    assert len({o.sum().item() for o in out}) > 1


def test_cpu_training_is_repeatable():
    x, y = data()
    cfg = TrainConfig(epochs=2, batch_size=32)
    a, _ = fit(tiny_model(), (x, y), None, cfg, CPU)
    b, _ = fit(tiny_model(), (x, y), None, cfg, CPU)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_killed_run_resumes_after_last_finished_epoch_and_matches_uninterrupted(tmp_path, capsys):
    x, y = data()
    cfg = TrainConfig(epochs=4, batch_size=32, restart_epochs=2)
    full, full_hist = fit(tiny_model(), (x, y), (x, y), cfg, CPU, select_best=False)

    ckpt = tmp_path / "ckpt.pt"

    def die_after_epoch_2(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt  # what a kill looks like to the loop: it never comes back

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), (x, y), (x, y), cfg, CPU, checkpoint=ckpt, on_epoch=die_after_epoch_2, select_best=False)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2

    resumed, hist = fit(tiny_model(), (x, y), (x, y), cfg, CPU, checkpoint=ckpt, select_best=False)
    assert "resumed" in capsys.readouterr().out
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]
    assert hist[-1]["train_loss"] == pytest.approx(full_hist[-1]["train_loss"], rel=1e-5)
    for pa, pb in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb)


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path, capsys):
    x, y = data()
    ckpt = tmp_path / "ckpt.pt"
    fit(tiny_model(), (x, y), None, TrainConfig(epochs=1, batch_size=32), CPU, checkpoint=ckpt)
    _, hist = fit(tiny_model(), (x, y), None, TrainConfig(epochs=2, batch_size=32, lr=5e-4), CPU, checkpoint=ckpt)
    assert [r["epoch"] for r in hist] == [1, 2]
    assert "another configuration" in capsys.readouterr().out


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y = data()
    ckpt = tmp_path / "ckpt.pt"
    model = tiny_model()
    cfg = TrainConfig(epochs=3, batch_size=32)

    def poison(row):
        if row["epoch"] == 1:
            with torch.no_grad():
                model[-1].bias.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss in epoch 2"):
        fit(model, (x, y), None, cfg, CPU, checkpoint=ckpt, on_epoch=poison)
    state = torch.load(ckpt, weights_only=False)
    assert state["epoch"] == 1 and torch.isfinite(state["model"]["4.bias"]).all()


def test_best_validation_epoch_is_kept():
    x, y = data()
    model, hist = fit(tiny_model(), (x, y), (x, y), TrainConfig(epochs=3, batch_size=32), CPU)
    best = max(hist, key=lambda r: r["val_acc"])
    from advhybrid.training import evaluate
    assert evaluate(model, x, y, CPU)["acc"] == pytest.approx(best["val_acc"])


def section(**kw) -> Section:
    base = dict(epochs=1, batch_size=100, lr=1e-3, weight_decay=5e-4, restart_epochs=1, restart_mult=1,
                label_smoothing=0.0, augment=True, seed=0, compile=False)
    return Section({**base, **kw}, "train", "params.yaml")


def test_config_reads_the_papers_recipe_from_params():
    cfg = TrainConfig.from_section(section())
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size) == (1e-3, 5e-4, 100)


@pytest.mark.parametrize("key,value,message", [
    ("epochs", 0, "'train.epochs' must be >= 1"),
    ("lr", -1.0, "'train.lr' must be > 0"),
    ("batch_size", "big", "'train.batch_size' must be int"),
])
def test_config_rejects_bad_values_naming_the_key(key, value, message):
    with pytest.raises((ValueError, ParamsError), match=message):
        TrainConfig.from_section(section(**{key: value}))


def test_config_missing_key_names_file_and_key():
    s = section()
    del s["seed"]
    with pytest.raises(ParamsError, match=r"params.yaml: missing key 'train.seed'"):
        TrainConfig.from_section(s)


def test_checkpoint_of_other_images_with_the_same_size_and_label_sum_is_not_resumed(tmp_path, capsys):
    # Another seed's split has as many images and, often, the same label counts: the run key
    # must see the images themselves.
    x, y = data()
    other = x.copy()
    other[0] = 255 - other[0]
    ckpt = tmp_path / "ckpt.pt"
    cfg = TrainConfig(epochs=1, batch_size=32)
    fit(tiny_model(), (x, y), None, cfg, CPU, checkpoint=ckpt)
    fit(tiny_model(), (other, y), None, cfg, CPU, checkpoint=ckpt)
    assert "another configuration" in capsys.readouterr().out


def test_checkpoint_of_another_width_is_not_resumed(tmp_path, capsys):
    from advhybrid.models import build_model

    x, y = data(2)
    ckpt = tmp_path / "ckpt.pt"
    cfg = TrainConfig(epochs=1, batch_size=32)
    fit(build_model("resnet56", 10, width=0.125, seed=0), (x, y), None, cfg, CPU, checkpoint=ckpt, name="m")
    capsys.readouterr()
    # Not a load_state_dict shape error: the wider net's run is a run of its own.
    fit(build_model("resnet56", 10, width=0.25, seed=0), (x, y), None, cfg, CPU, checkpoint=ckpt, name="m")
    assert "another configuration" in capsys.readouterr().out


def test_model_seed_decides_the_initial_weights_and_leaves_the_global_rng_alone():
    from advhybrid.models import build_model

    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model("vgg19bn", 10, width=0.125, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)  # the global RNG no longer matters
    b = build_model("vgg19bn", 10, width=0.125, seed=1)
    c = build_model("vgg19bn", 10, width=0.125, seed=2)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_stages_seed_the_model_initialisation_from_params(monkeypatch):
    # build_model runs before fit seeds anything, so the stages must pass the seed themselves.
    import advhybrid.hybrid_classifier as hc
    from conftest import REPO

    seen = {}

    def build(name, num_classes=10, width=1.0, seed=None):
        seen["seed"] = seed
        raise RuntimeError("built")

    monkeypatch.setattr(hc, "build_model", build)
    x, y = data(1)
    with pytest.raises(RuntimeError, match="built"):
        hc.train_and_test("resnet50", 0.125, TrainConfig(epochs=1, seed=7), (x, y), (x, y), {}, CPU, checkpoint="")
    assert seen["seed"] == 7  # train@, control@, train_fast_at and seed@ all train through here
    assert "seed=cfg.seed)" in (REPO / "src" / "train_targets.py").read_text()


def test_table_2_row_is_the_epoch_whose_weights_are_kept():
    from advhybrid.training import saved_epoch

    hist = [{"epoch": 1, "val_acc": 0.5, "train_loss": 2.0}, {"epoch": 2, "val_acc": 0.7, "train_loss": 1.5},
            {"epoch": 3, "val_acc": 0.7, "train_loss": 1.2}, {"epoch": 4, "val_acc": 0.6, "train_loss": 1.0}]
    assert saved_epoch(hist)["epoch"] == 2  # fit keeps the first best (score > best)
    assert saved_epoch(hist, select_best=False)["epoch"] == 4
    x, y = data()
    model, hist = fit(tiny_model(), (x, y), (x, y), TrainConfig(epochs=3, batch_size=32), CPU)
    from advhybrid.training import evaluate
    assert evaluate(model, x, y, CPU)["acc"] == pytest.approx(saved_epoch(hist)["val_acc"])


def test_the_default_selection_is_still_the_clean_validation_accuracy(tmp_path, capsys):
    # train@, control@ and seed@ pass no criterion: their rows, choice and run key are as before
    from advhybrid.io import data_fingerprint
    from advhybrid.training import saved_epoch

    hist = [{"epoch": 1, "val_acc": 0.5, "val_pgd_acc": 0.4}, {"epoch": 2, "val_acc": 0.7, "val_pgd_acc": 0.0},
            {"epoch": 3, "val_acc": 0.7, "val_pgd_acc": 0.0}]
    assert saved_epoch(hist)["epoch"] == 2
    x, y = data()
    ckpt = tmp_path / "ckpt.pt"
    cfg = TrainConfig(epochs=2, batch_size=32)
    _, hist = fit(tiny_model(), (x, y), (x, y), cfg, CPU, checkpoint=ckpt)
    assert list(hist[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    state = torch.load(ckpt, weights_only=False)
    assert state["best_acc"] == saved_epoch(hist)["val_acc"] and state["best_epoch"] == saved_epoch(hist)["epoch"]
    assert state["key"] == cfg.key({"name": "model", "build": {"name": "model", "class": "Sequential"},
                                    "data": data_fingerprint(x, y)})
    capsys.readouterr()
    fit(tiny_model(), (x, y), (x, y), cfg, CPU, checkpoint=ckpt, select_by=("val_acc",))
    assert "resumed" in capsys.readouterr().out  # the explicit default is the same run


def test_identical_weights_saved_twice_give_identical_files(tmp_path):
    # torch.save writes the file's name into the zip: saving through a random temporary path
    # gave equal weights a new md5 each time, and DVC reran everything downstream.
    from advhybrid.io import file_digest, save_torch

    state = tiny_model().state_dict()
    save_torch(tmp_path / "a.pt", state)
    first = file_digest(tmp_path / "a.pt")
    save_torch(tmp_path / "a.pt", state)
    assert file_digest(tmp_path / "a.pt") == first


def test_corrupt_checkpoint_is_named_in_the_error(tmp_path):
    x, y = data(1)
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"truncated")
    with pytest.raises(ValueError, match=r"ckpt.pt: unreadable checkpoint"):
        fit(tiny_model(), (x, y), None, TrainConfig(epochs=1, batch_size=32), CPU, checkpoint=ckpt)


def test_a_checkpoint_of_this_run_missing_entries_names_the_file_and_what_it_lacks(tmp_path):
    from advhybrid.io import load_checkpoint, save_torch

    x, y = data(1)
    ckpt = tmp_path / "ckpt.pt"
    fit(tiny_model(), (x, y), None, TrainConfig(epochs=1, batch_size=32), CPU, checkpoint=ckpt)
    state = load_checkpoint(ckpt)
    del state["opt"], state["history"]
    save_torch(ckpt, state)
    with pytest.raises(ValueError, match=r"ckpt.pt: checkpoint lacks opt, history \(it has key, epoch, model.*"
                                         r"delete it to start that run afresh"):
        fit(tiny_model(), (x, y), None, TrainConfig(epochs=1, batch_size=32), CPU, checkpoint=ckpt)


def test_fgsm_random_start_stays_in_the_ball_and_moves_along_the_gradient_sign():
    from advhybrid.training.adversarial import fgsm_random_start

    model = tiny_model().train()
    x = torch.rand(16, 3, 32, 32) * 0.5 + 0.25
    y = torch.randint(0, 10, (16,))
    gen = torch.Generator().manual_seed(0)
    eps, alpha = 8 / 255, 10 / 255
    xa = fgsm_random_start(eps, alpha)(model, x, y, gen)
    assert (xa - x).abs().max() <= eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    assert all(p.grad is None for p in model.parameters()), "no parameter gradient may leak"
    # alpha > eps: most coordinates end on the ball's surface, on the side the loss gradient points
    d = (xa - x)
    x0 = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x0), y).backward()
    agree = (d.sign() == x0.grad.sign()).float().mean().item()
    assert (d.abs() > eps - 1e-6).float().mean() > 0.5 and agree > 0.7
    with pytest.raises(ValueError, match="eps and alpha must be > 0"):
        fgsm_random_start(0.0, alpha)


def test_adversarial_training_is_a_run_of_its_own_for_checkpoints(tmp_path, capsys):
    from advhybrid.training.adversarial import fgsm_random_start

    x, y = data(2)
    ckpt = tmp_path / "ckpt.pt"
    cfg = TrainConfig(epochs=1, batch_size=32)
    fit(tiny_model(), (x, y), None, cfg, CPU, checkpoint=ckpt)
    capsys.readouterr()
    _, hist = fit(tiny_model(), (x, y), None, cfg, CPU, checkpoint=ckpt,
                  perturb=fgsm_random_start(8 / 255, 10 / 255), key_extra={"perturb": "fgsm_rs"})
    assert "another configuration" in capsys.readouterr().out and len(hist) == 1


def test_a_resumed_adam_keeps_its_step_counters_on_the_cpu(tmp_path, monkeypatch):
    """Checkpoints load on the CPU whatever the device (issue 17): loaded straight onto CUDA,
    Adam's `step` tensors would live on the GPU and every resumed step would sync on them."""
    import torch

    from advhybrid.io import load_checkpoint, save_torch
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    save_torch(tmp_path / "ckpt.pt", {"opt": opt.state_dict()})
    seen = {}
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.update(k) or real_load(*a, **k))
    state = load_checkpoint(tmp_path / "ckpt.pt")
    assert torch.device(seen.get("map_location")) == torch.device("cpu"), seen
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(state["opt"])
    steps = [s["step"] for s in fresh.state.values()]
    assert steps and all(t.device.type == "cpu" and float(t) == 1 for t in steps)


def test_checkpoints_every_n_epochs_resume_from_the_last_written_one(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVHYBRID_CHECKPOINT_EVERY", "3")
    x, y = data()
    cfg = TrainConfig(epochs=4, batch_size=32, restart_epochs=2)
    full, _ = fit(tiny_model(), (x, y), (x, y), cfg, CPU)
    ckpt = tmp_path / "ckpt.pt"
    written = []

    def record_then_die(row):
        written.append(torch.load(ckpt, weights_only=False)["epoch"] if ckpt.exists() else None)
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), (x, y), (x, y), cfg, CPU, checkpoint=ckpt, on_epoch=record_then_die)
    assert written == [None, None, 3]
    state = torch.load(ckpt, weights_only=False)
    # best weights are stored only when they are not the checkpoint's own
    assert (state["best_state"] is None) == (state["best_epoch"] == 3)
    resumed, hist = fit(tiny_model(), (x, y), (x, y), cfg, CPU, checkpoint=ckpt)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]
    for pa, pb in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb)


def test_a_bad_checkpoint_interval_names_the_variable(monkeypatch):
    from advhybrid.training.trainer import checkpoint_every
    monkeypatch.setenv("ADVHYBRID_CHECKPOINT_EVERY", "0")
    with pytest.raises(ValueError, match="ADVHYBRID_CHECKPOINT_EVERY='0'"):
        checkpoint_every()
