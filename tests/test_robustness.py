"""The robustness study's attacks, checks and report: AutoAttack as the standard version,
gradient masking caught, pairs by source."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchattacks
from torch import nn

from advhybrid.attacks.whitebox import AUTOATTACK_STANDARD, autoattack, deviations, sanity_checks
from advhybrid.evaluation.robustness import RobustnessSettings, compare_on_aes, split_figures, whitebox_figures

CPU = torch.device("cpu")


def test_autoattack_is_composed_with_the_standard_versions_settings():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))
    multi = autoattack(model, AUTOATTACK_STANDARD)
    apgd, apgdt, fab, square = multi.attacks
    assert [type(a) for a in multi.attacks] == [torchattacks.APGD, torchattacks.APGDT, torchattacks.FAB,
                                               torchattacks.Square]
    for a in multi.attacks:
        assert a.norm == "Linf" and a.eps == pytest.approx(8 / 255) and a.n_restarts == 1
    assert (apgd.steps, apgd.loss, apgd.thr_decr) == (100, "ce", 0.75)
    assert (apgdt.steps, apgdt.n_target_classes, apgdt.thr_decr) == (100, 9, 0.75)
    assert (fab.steps, fab.multi_targeted, fab.n_target_classes) == (100, True, 9)
    assert (square.n_queries, square.loss) == (5000, "margin")
    assert deviations(AUTOATTACK_STANDARD) == {}
    # torchattacks' own wrapper is NOT the standard version: its APGD runs 10 steps
    wrapper = torchattacks.AutoAttack(model, norm="Linf", eps=8 / 255, version="standard", n_classes=10)
    assert wrapper._autoattack.attacks[0].steps != AUTOATTACK_STANDARD.apgd_steps


def test_a_reduced_autoattack_names_its_deviations():
    s = AUTOATTACK_STANDARD.model_copy(update={"square_queries": 1000})
    assert deviations(s) == {"square_queries": (1000, 5000)}
    with pytest.raises(ValueError, match="target_classes=5 must be n_classes - 1 = 9"):
        autoattack(nn.Linear(1, 1), AUTOATTACK_STANDARD.model_copy(update={"target_classes": 5}))



def test_the_stage_names_a_bad_autoattack_setting_with_its_file_and_key():
    import importlib.util

    from advhybrid.params import ParamsError, Section
    from conftest import REPO

    spec = importlib.util.spec_from_file_location("eval_robustness", REPO / "src" / "eval_robustness.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    good = AUTOATTACK_STANDARD.model_dump()
    assert stage.autoattack_settings(Section({"autoattack": good}, "robustness", "p.yaml")) == AUTOATTACK_STANDARD
    bad = Section({"autoattack": {**good, "apgd_steps": 0, "square_querys": 10}}, "robustness", "p.yaml")
    with pytest.raises(ParamsError, match=r"p.yaml: 'robustness.autoattack.apgd_steps': Input should be greater than "
                                          r"or equal to 1; 'robustness.autoattack.square_querys': Extra inputs"):
        stage.autoattack_settings(bad)


class Quantise(nn.Module):
    """A non-differentiable input quantisation (zero gradient almost everywhere): the textbook
    case of gradient masking, which looks robust to gradient attacks without being robust."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


def fragile_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2048, 10)).eval()


def own_labelled_images(model: nn.Module, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 32, 32, generator=g)
    with torch.no_grad():
        return x, model(x).argmax(1)


SMALL = RobustnessSettings(eps_255=(4, 8, 16), pgd_steps=10, pgd_restarts=1, pgd_check_steps=20,
                           autoattack=AUTOATTACK_STANDARD.model_copy(update=dict(apgd_steps=5, apgdt_steps=5, fab_steps=5, square_queries=20)),
                           autoattack_images=10, batch_size=64)


def test_gradient_masking_is_flagged_and_an_honest_fragile_model_is_not():
    net = fragile_classifier()
    masked = nn.Sequential(Quantise(), net).eval()
    x, y = own_labelled_images(masked)
    out = whitebox_figures(masked, x, y, SMALL, "masked")
    assert out["clean"]["acc"] == 1.0
    assert out["checks"]["no_gradient_masking"]["ok"] is False, out["pgd"]
    x, y = own_labelled_images(net)
    honest = whitebox_figures(net, x, y, SMALL, "honest", check_convergence=True)
    assert honest["checks"]["no_gradient_masking"]["ok"] is True, honest["pgd"]
    assert honest["pgd"]["16"]["acc"] <= honest["pgd"]["8"]["acc"] <= honest["pgd"]["4"]["acc"]
    assert {"monotone", "no_gradient_masking", "pgd_converged"} <= set(honest["checks"])
    assert honest["autoattack"]["deviations"]["apgd_steps"] == [5, 100]


def test_sanity_checks_catch_accuracy_that_rises_with_the_budget():
    c = sanity_checks(0.9, {4 / 255: 0.2, 8 / 255: 0.3, 16 / 255: 0.1})
    assert c["monotone"]["ok"] is False and c["no_gradient_masking"]["ok"] is True


def hybrid_test() -> dict[str, np.ndarray]:
    # 4 sources, each with one real image and one AE (made by target 0 or 1), shuffled
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    return {"labels": labels, "is_adv": np.array([0, 0, 0, 0, 1, 1, 1, 1]),
            "source_id": np.array([10, 11, 12, 13, 10, 11, 12, 13]),
            "target_model": np.array([-1, -1, -1, -1, 0, 1, 0, 1]), "target_names": np.array(["a", "b"])}


def test_split_figures_pair_each_real_image_with_its_own_ae_and_break_down_by_target():
    t = hybrid_test()
    pred = t["labels"].copy()
    pred[[4, 6]] = 9  # both AEs of target "a" fool the model
    f = split_figures(pred, t)
    assert f["real"]["acc"] == 1.0 and f["adversarial"]["acc"] == 0.5
    assert f["adversarial_by_target"]["a"]["acc"] == 0.0 and f["adversarial_by_target"]["b"]["acc"] == 1.0
    assert (f["real_vs_adversarial"]["only_a"], f["real_vs_adversarial"]["only_b"]) == (2, 0)
    c = compare_on_aes(pred, t["labels"], t)
    assert c["adversarial"]["diff"] == -0.5 and c["real"]["diff"] == 0.0
    t["source_id"] = np.array([10, 11, 12, 13, 10, 11, 12, 14])
    with pytest.raises(ValueError, match="pair one to one by source_id"):
        split_figures(pred, t)


def test_the_same_sources_control_swaps_each_ae_for_its_source_and_names_an_orphan_ae():
    from advhybrid.data.control import ControlDataError, same_sources

    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    split = {"images": images, "labels": np.array([3, 3, 5, 5]), "is_adv": np.array([0, 1, 1, 0]),
             "source_id": np.array([7, 7, 9, 9])}
    x, y = same_sources(split)
    assert np.array_equal(x[1], images[0]) and np.array_equal(x[2], images[3])
    assert np.array_equal(x[[0, 3]], images[[0, 3]]) and y.tolist() == [3, 3, 5, 5]
    orphan = dict(split, source_id=np.array([7, 7, 8, 9]))
    with pytest.raises(ControlDataError, match=r"train.npz: AEs whose real source image is not in the split \(source ids \[8\]"):
        same_sources(orphan, "train.npz")
