"""White-box attacks (attacks/whitebox.py, evaluation/robustness.py): PGD as Madry et al. run it,
the chained budget sweep, AutoAttack as fra31's standard version on PGD's survivors, and sanity
checks that can fail."""
from __future__ import annotations

import math

import pytest
import torch
import torchattacks
from torch import nn

from advhybrid.attacks import whitebox as wb
from advhybrid.attacks.whitebox import AUTOATTACK_STANDARD
from advhybrid.device import to_float
from advhybrid.evaluation.robustness import RobustnessSettings, from_bits, to_bits, whitebox_figures
from conftest import synthetic_cifar

SHORT_AA = AUTOATTACK_STANDARD.model_copy(update=dict(apgd_steps=2, apgdt_steps=2, fab_steps=2, square_queries=5))
SMALL = RobustnessSettings(eps_255=(2, 4, 8), pgd_steps=2, pgd_restarts=2, pgd_check_steps=6, autoattack=SHORT_AA,
                           batch_size=1000)


def fragile_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2048, 10)).eval()


def own_labelled_images(model: nn.Module, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).argmax(1)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny CNN fitted in a few steps to synthetic data, and its training images: correct on
    all of them, some of which survive PGD at 8/255 (so each stage of the sweep has work)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2048, 10))
    images, labels = synthetic_cifar(10, seed=0)
    x, y = to_float(torch.as_tensor(images)).contiguous(), torch.as_tensor(labels)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(10):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval().requires_grad_(False), x, y


class Quantise(nn.Module):
    """A non-differentiable input quantisation (zero gradient almost everywhere): the textbook
    case of gradient masking, which looks robust to gradient attacks without being robust."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


# ----------------------------------------------------------------------------- PGD


def test_pgd_is_torchattacks_pgd_from_the_same_random_start():
    net = fragile_classifier()
    x, y = own_labelled_images(net)
    eps, steps = 4 / 255, 5
    torch.manual_seed(3)
    start = torch.empty_like(x).uniform_(-eps, eps)  # torchattacks' own draw
    torch.manual_seed(3)
    theirs = torchattacks.PGD(net, eps=eps, alpha=wb.pgd_alpha(eps, steps), steps=steps, random_start=True)(x, y)
    ours = wb.pgd(net, x, y, eps, wb.pgd_alpha(eps, steps), steps, start)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, x + start)  # it did step


def test_each_budget_steps_2_5_eps_over_steps_from_a_random_start_restarting_on_survivors(trained, monkeypatch):
    net, x, y = trained
    calls, real = [], wb.pgd

    def spy(model, xb, yb, eps, alpha, steps, start):
        calls.append((eps, alpha, steps, len(xb), start))
        return real(model, xb, yb, eps, alpha, steps, start)

    monkeypatch.setattr(wb, "pgd", spy)
    eps = [e / 255 for e in (2, 4, 8, 16)]
    sweep = wb.pgd_sweep(net, x, y, wb.correct(net, x, y), eps, steps=4, restarts=2, batch_size=1000)
    assert {c[0] for c in calls} == set(eps)
    for e, alpha, steps, n, start in calls:
        assert alpha == pytest.approx(2.5 * e / 4) and steps == 4
        assert start.abs().max() <= e and start.abs().max() > 0.9 * e  # a random start filling the ball
    for k, e in enumerate(eps):
        sizes = [c[3] for c in calls if c[0] == e]
        before = int(sweep[k - 1].sum()) if k else len(x)
        assert sizes[0] == before and sizes[1] <= sizes[0], "each budget, then each restart, on the survivors"
    assert any(c[3] < len(x) for c in calls), "fixture should break some images along the way"


def test_an_images_random_start_is_its_own_whatever_shares_its_batch():
    x = torch.zeros(10, 3, 4, 4)
    a = wb.random_starts(x, seed=0, restart=1)
    assert torch.equal(a, wb.random_starts(x, seed=0, restart=1))  # a row is fixed by (seed, restart) alone
    assert not torch.equal(a[5], wb.random_starts(x, seed=0, restart=0)[5])
    assert not torch.equal(a[5], wb.random_starts(x, seed=1, restart=1)[5])
    assert a.abs().max() <= 1 and a.min() < -0.9 and a.max() > 0.9


def test_the_chained_sweep_is_never_above_the_unchained_one_and_is_nested(trained):
    net, x, y = trained
    eps = [e / 255 for e in (1, 2, 4, 8, 16)]
    clean = wb.correct(net, x, y)
    chained = wb.pgd_sweep(net, x, y, clean, eps, steps=2, restarts=2, batch_size=16)
    unchained = wb.pgd_sweep(net, x, y, clean, eps, steps=2, restarts=2, batch_size=64, chained=False)
    acc = [(float(c.float().mean()), float(u.float().mean())) for c, u in zip(chained, unchained)]
    assert len({a for a, _ in acc}) > 2, f"fixture should give several accuracies: {acc}"
    for c, u in zip(chained, unchained):
        assert not (c & ~u).any(), "chained: robust only where PGD at this budget also fails alone"
        assert c.float().mean() <= u.float().mean()
    for small, large in zip(chained, chained[1:]):
        assert not (large & ~small).any(), "broken at a smaller budget, broken at every larger one"


def test_an_image_broken_at_a_small_budget_stays_broken_where_a_larger_attack_fails(monkeypatch):
    net = fragile_classifier()
    x, y = own_labelled_images(net)
    # A stand-in attack that only succeeds at 2/255: it sends every image to black, whose class
    # is the wrong one for some images; at 4/255 it returns the images untouched.
    monkeypatch.setattr(wb, "pgd", lambda model, xb, yb, eps, alpha, steps, start:
                        torch.zeros_like(xb) if eps == 2 / 255 else xb)
    with torch.no_grad():
        broken = net(torch.zeros_like(x)).argmax(1) != y
    assert 0 < broken.sum() < len(y)
    clean = wb.correct(net, x, y)
    chained = wb.pgd_sweep(net, x, y, clean, [2 / 255, 4 / 255], 1, 1, 64)
    unchained = wb.pgd_sweep(net, x, y, clean, [2 / 255, 4 / 255], 1, 1, 64, chained=False)
    assert torch.equal(chained[0], ~broken) and torch.equal(chained[1], ~broken)
    assert unchained[1].all()


# ----------------------------------------------------------------------------- AutoAttack


# fra31/auto-attack (autoattack/autoattack.py): AutoAttack.__init__ builds the attacks, then
# set_version('standard') for L-inf sets apgd.n_restarts=1, apgd_targeted.n_target_classes=9,
# fab.n_restarts=1, apgd_targeted.n_restarts=1, fab.n_target_classes=9, square.n_queries=5000;
# run_standard_evaluation runs 'fab-t' with fab.targeted=True, n_restarts=1, and sets apgd.loss='ce'.
FRA31_STANDARD = {
    torchattacks.APGD: dict(norm="Linf", steps=100, n_restarts=1, loss="ce", eot_iter=1, thr_decr=0.75),
    torchattacks.APGDT: dict(norm="Linf", steps=100, n_restarts=1, n_target_classes=9, eot_iter=1, thr_decr=0.75),
    torchattacks.FAB: dict(norm="Linf", steps=100, n_restarts=1, multi_targeted=True, n_target_classes=9,
                           alpha_max=0.1, eta=1.05, beta=0.9),
    torchattacks.Square: dict(norm="Linf", n_queries=5000, n_restarts=1, p_init=0.8, loss="margin",
                              rescale_schedule=False),
}


def test_autoattack_sets_every_setting_as_fra31s_standard_version():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))
    multi = wb.autoattack(model, AUTOATTACK_STANDARD, seed=7)
    # fra31's attacks_to_run for 'standard': apgd-ce, apgd-t, fab-t, square, in that order
    assert [type(a) for a in multi.attacks] == list(FRA31_STANDARD)
    for attack in multi.attacks:
        want = FRA31_STANDARD[type(attack)] | {"eps": 8 / 255, "seed": 7}
        assert {k: getattr(attack, k) for k in want} == want, type(attack)
        assert not attack.targeted  # FAB-T and APGD-T loop over the target classes themselves
    assert wb.deviations(AUTOATTACK_STANDARD) == {}


def test_torchattacks_defaults_are_not_the_standard_version_so_the_pins_matter():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))
    assert torchattacks.Square(model).rescale_schedule is True
    assert torchattacks.APGD(model).steps == 10 and torchattacks.FAB(model).multi_targeted is False
    wrapper = torchattacks.AutoAttack(model, norm="Linf", eps=8 / 255, version="standard", n_classes=10)
    assert wrapper._autoattack.attacks[0].steps != 100


def test_a_reduced_autoattack_names_its_deviations_and_refuses_other_target_counts():
    s = AUTOATTACK_STANDARD.model_copy(update={"square_queries": 1000})
    assert wb.deviations(s) == {"square_queries": (1000, 5000)}
    assert wb.autoattack(nn.Linear(1, 1), s).attacks[3].n_queries == 1000
    with pytest.raises(ValueError, match="target_classes=5 must be n_classes - 1 = 9"):
        wb.autoattack(nn.Linear(1, 1), AUTOATTACK_STANDARD.model_copy(update={"target_classes": 5}))


def test_autoattack_runs_on_the_pgd_survivors_of_the_same_images_and_only_the_check_does_pgd_long(trained, monkeypatch):
    net, x, y = trained
    seen, real_aa, real_pgd, long_sizes = [], wb.autoattack, wb.pgd, []

    def aa(model, s, n_classes=10, seed=0):
        attack = real_aa(model, s, n_classes, seed)
        return lambda xb, yb: seen.append(len(xb)) or attack(xb, yb)

    def pgd(model, xb, yb, eps, alpha, steps, start):
        if steps == SMALL.pgd_check_steps:
            long_sizes.append(len(xb))
        return real_pgd(model, xb, yb, eps, alpha, steps, start)

    monkeypatch.setattr(wb, "autoattack", aa)
    monkeypatch.setattr(wb, "pgd", pgd)
    x, y = x[::5], y[::5]  # 20 images: AutoAttack's targeted attacks are slow on a CPU
    out = whitebox_figures(net, x, y, SMALL, "tiny", check_convergence=True)
    bits = {k: from_bits(v) for k, v in out["per_image"].items()}
    assert set(bits) == {"clean", "noise", "pgd_2", "pgd_4", "pgd_8", "pgd_autoattack", "unbounded", "pgd_long"}
    assert all(len(b) == len(y) for b in bits.values())
    survivors = int(bits["pgd_8"].sum())
    assert 0 < survivors < len(y), "fixture should leave some, not all, images robust at 8/255"
    assert sum(seen) == survivors and long_sizes[0] == survivors
    assert not (bits["pgd_autoattack"] & ~bits["pgd_8"]).any() and not (bits["pgd_long"] & ~bits["pgd_8"]).any()
    assert out["pgd_autoattack"]["n"] == len(y) and out["pgd_autoattack"]["acc"] == bits["pgd_autoattack"].mean()
    assert out["pgd_autoattack"]["deviations"]["square_queries"] == [5, 5000]
    assert out["pgd"]["8"]["acc"] == bits["pgd_8"].mean() and out["pgd_long"]["steps"] == 6
    assert {"no_gradient_masking", "unbounded", "pgd_converged"} == set(out["checks"])


# ----------------------------------------------------------------------------- checks


def test_the_unbounded_check_flags_masked_gradients_and_passes_an_honest_model():
    net = fragile_classifier()
    masked = nn.Sequential(Quantise(), net).eval()
    s = RobustnessSettings(eps_255=(8, 16), pgd_steps=5, pgd_restarts=2, autoattack=SHORT_AA, batch_size=64)
    x, y = own_labelled_images(masked)
    flagged = whitebox_figures(masked, x, y, s, "masked")
    assert flagged["clean"]["acc"] == 1.0 and flagged["unbounded"]["acc"] > 0
    assert (flagged["checks"]["unbounded"]["ok"], flagged["checks"]["unbounded"]["decisive"]) == (False, True)
    assert flagged["checks"]["no_gradient_masking"]["ok"] is False
    x, y = own_labelled_images(net)
    honest = whitebox_figures(net, x, y, s, "honest")
    assert honest["unbounded"]["acc"] == 0.0
    assert all(c["ok"] for c in honest["checks"].values()) and honest["checks"]["no_gradient_masking"]["decisive"]
    # 255/255 attacks only what 16/255 left: it decides something only where that is not nothing
    assert honest["checks"]["unbounded"]["decisive"] == (honest["pgd"]["16"]["acc"] > 0)


def test_a_check_that_could_not_have_failed_says_so():
    idle = wb.sanity_checks(0.0, (16 / 255, 0.0), 0.0)
    assert all(c["ok"] and not c["decisive"] for c in idle.values())
    live = wb.sanity_checks(0.8, (16 / 255, 0.1), 0.0)
    assert all(c["ok"] and c["decisive"] for c in live.values())
    assert not wb.sanity_checks(0.8, (16 / 255, 0.0), 0.0)["unbounded"]["decisive"]
    masked = wb.sanity_checks(0.8, (16 / 255, 0.6), 0.1)
    assert not masked["no_gradient_masking"]["ok"] and not masked["unbounded"]["ok"]
    assert wb.convergence_check(0.0, 0.0, 20, 100, 8) | {"detail": ""} == {"ok": True, "decisive": False, "detail": ""}
    c = wb.convergence_check(0.30, 0.25, 20, 100, 8)
    assert (c["ok"], c["decisive"]) == (False, True) and "PGD-20 0.300 vs PGD-100 on its survivors 0.250" in c["detail"]


def test_per_image_outcomes_round_trip_as_a_string_of_bits():
    ok = torch.tensor([True, False, False, True]).numpy()
    assert to_bits(ok) == "1001" and (from_bits("1001") == ok).all() and to_bits(ok[:0]) == ""
    with pytest.raises(ValueError, match="string of '0' and '1'"):
        from_bits("10x1")
    assert math.isclose(from_bits("1101").mean(), 0.75)
