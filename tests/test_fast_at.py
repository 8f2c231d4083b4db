"""train_fast_at keeps the epoch with the best PGD accuracy on a held-out batch, not the best clean one."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from advhybrid.training import TrainConfig, fit, saved_epoch
from conftest import REPO, synthetic_cifar

CPU = torch.device("cpu")


def stage():
    spec = importlib.util.spec_from_file_location("train_fast_at", REPO / "src" / "train_fast_at.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FA = stage()


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


def scripted(values: list[float], snapshots: list | None = None):
    """A monitor that reports the given PGD accuracies, one an epoch (and keeps each epoch's weights)."""
    it = iter(values)

    def monitor(net: nn.Module) -> dict[str, float]:
        assert not net.training, "the PGD batch is attacked in eval mode"
        if snapshots is not None:
            snapshots.append({k: t.detach().clone() for k, t in net.state_dict().items()})
        return {FA.PGD_COLUMN: next(it)}

    return monitor


def test_catastrophic_overfitting_the_saved_epoch_follows_pgd_not_clean_accuracy():
    # clean accuracy rises every epoch while PGD accuracy collapses at epoch 3
    hist = [{"epoch": e, "val_acc": 0.5 + 0.05 * e, FA.PGD_COLUMN: pgd}
            for e, pgd in enumerate([0.30, 0.38, 0.02, 0.0, 0.0], start=1)]
    assert saved_epoch(hist, select_by=FA.SELECT_BY)["epoch"] == 2
    assert saved_epoch(hist)["epoch"] == 5  # what clean accuracy would have kept


def test_pgd_ties_go_to_the_better_clean_accuracy_then_to_the_first_epoch():
    hist = [{"epoch": 1, "val_acc": 0.6, FA.PGD_COLUMN: 0.4}, {"epoch": 2, "val_acc": 0.7, FA.PGD_COLUMN: 0.4},
            {"epoch": 3, "val_acc": 0.7, FA.PGD_COLUMN: 0.4}, {"epoch": 4, "val_acc": 0.8, FA.PGD_COLUMN: 0.1}]
    assert saved_epoch(hist, select_by=FA.SELECT_BY)["epoch"] == 2


def test_fit_returns_the_weights_of_the_best_pgd_epoch():
    x, y = synthetic_cifar(10, seed=1)
    snaps: list = []
    model, hist = fit(tiny_model(), (x, y), (x, y), TrainConfig(epochs=4, batch_size=32), CPU,
                      select_by=FA.SELECT_BY, monitor=scripted([0.3, 0.5, 0.1, 0.05], snaps))
    assert [r[FA.PGD_COLUMN] for r in hist] == [0.3, 0.5, 0.1, 0.05]
    for k, t in model.state_dict().items():
        torch.testing.assert_close(t, snaps[1][k])


def test_a_resumed_run_keeps_the_pgd_criterion_and_its_best_epoch(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ADVHYBRID_CHECKPOINT_EVERY", raising=False)
    x, y = synthetic_cifar(10, seed=1)
    cfg, pgd = TrainConfig(epochs=4, batch_size=32, restart_epochs=2), [0.3, 0.5, 0.1, 0.05]
    full, full_hist = fit(tiny_model(), (x, y), (x, y), cfg, CPU, select_by=FA.SELECT_BY, monitor=scripted(pgd))
    ckpt = tmp_path / "ckpt.pt"

    def die_after_epoch_3(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), (x, y), (x, y), cfg, CPU, checkpoint=ckpt, on_epoch=die_after_epoch_3,
            select_by=FA.SELECT_BY, monitor=scripted(pgd))
    # epoch 4 only: a best score reset on resume would let its 0.05 replace epoch 2's weights
    resumed, hist = fit(tiny_model(), (x, y), (x, y), cfg, CPU, checkpoint=ckpt, select_by=FA.SELECT_BY,
                        monitor=scripted(pgd[3:]))
    assert "resumed" in capsys.readouterr().out
    assert [r[FA.PGD_COLUMN] for r in hist] == pgd
    for pa, pb in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb)

    # a checkpoint chosen by clean accuracy is another run's: never resumed under the PGD criterion
    other = tmp_path / "clean.pt"
    fit(tiny_model(), (x, y), (x, y), TrainConfig(epochs=1, batch_size=32), CPU, checkpoint=other)
    capsys.readouterr()
    fit(tiny_model(), (x, y), (x, y), TrainConfig(epochs=1, batch_size=32), CPU, checkpoint=other,
        select_by=FA.SELECT_BY, monitor=scripted([0.1]))
    assert "another configuration" in capsys.readouterr().out


def test_pgd_monitor_is_fixed_fp32_eval_mode_and_leaves_the_global_rng_alone():
    x, y = synthetic_cifar(4, seed=2)
    model = tiny_model().train()
    monitor = FA.pgd_monitor(x, y, 8 / 255, 2 / 255, 3, seed=0, device=CPU)
    before = torch.get_rng_state()
    a = monitor(model)[FA.PGD_COLUMN]
    assert torch.equal(torch.get_rng_state(), before) and not model.training
    assert monitor(model)[FA.PGD_COLUMN] == a  # the same batch and random start every epoch
    from advhybrid.training import evaluate
    assert 0.0 <= a <= evaluate(model, x, y, CPU)["acc"]


def test_the_stage_records_the_pgd_choice_and_what_clean_accuracy_would_have_kept(tmp_path, monkeypatch):
    from advhybrid import hybrid_classifier
    monkeypatch.setattr(hybrid_classifier, "build_model", lambda *a, **k: tiny_model())
    x, y = synthetic_cifar(10, seed=1)
    test = {"images": x, "labels": y, "is_adv": np.arange(len(y)) % 2}
    monitor = scripted([0.3, 0.5, 0.1])
    _, metrics, hist, _ = FA.train_and_test("resnet50", 0.125, TrainConfig(epochs=3, batch_size=32), (x, y),
                                            (x, y), test, CPU, checkpoint=str(tmp_path / "c.pt"), monitor=monitor,
                                            select_by=FA.SELECT_BY)
    metrics |= FA.selection(hist)
    clean = saved_epoch(hist)
    assert (metrics["selected_by"], metrics["best_epoch"], metrics[FA.PGD_COLUMN]) == (FA.PGD_COLUMN, 2, 0.5)
    assert metrics["val_acc"] == hist[1]["val_acc"]
    assert (metrics["clean_best_epoch"], metrics[f"clean_best_{FA.PGD_COLUMN}"]) == (clean["epoch"], clean[FA.PGD_COLUMN])
