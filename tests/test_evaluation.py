"""Metrics, the mixed draws of Tables 3-5, and the report that sets ours beside the paper's."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, stage_args
from sklearn.metrics import precision_score, recall_score

from advhybrid.evaluation.metrics import accuracy_by_kind, classification_metrics, interval
from advhybrid.evaluation.mixed import draw_mixed, mixed_eval
from advhybrid.evaluation.goals import check_goals
from advhybrid.evaluation.report import PAPER_MIXED, PAPER_NAMES, render


def test_metrics_match_hand_computed_values():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred)
    # by hand: precision per class 1/2, 2/3, 1/1; recall 1/2, 2/2, 1/2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["precision"] == pytest.approx(precision_score(y_true, y_pred, average="macro"))
    assert m["recall"] == pytest.approx(recall_score(y_true, y_pred, average="macro"))


def test_accuracy_by_kind_separates_real_and_adversarial():
    out = accuracy_by_kind(np.array([1, 1, 2, 2]), np.array([1, 0, 2, 2]), np.array([0, 0, 1, 1]))
    assert out == {"acc_real": 0.5, "acc_adv": 1.0}


@pytest.mark.parametrize("fraction", [0.03, 0.05, 0.10])
def test_mixed_draw_has_exact_ratio_and_no_repeats(fraction):
    is_adv = np.r_[np.zeros(5000, bool), np.ones(5000, bool)]
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = draw_mixed(is_adv, 1000, fraction, rng)
        assert len(idx) == 1000 and len(np.unique(idx)) == 1000
        assert is_adv[idx].sum() == round(1000 * fraction)


def test_mixed_draws_differ_between_draws():
    is_adv = np.r_[np.zeros(500, bool), np.ones(500, bool)]
    rng = np.random.default_rng(0)
    assert not np.array_equal(np.sort(draw_mixed(is_adv, 100, 0.1, rng)), np.sort(draw_mixed(is_adv, 100, 0.1, rng)))


def test_mixed_draw_too_large_for_the_split_says_what_is_missing():
    is_adv = np.r_[np.zeros(990, bool), np.ones(20, bool)]
    with pytest.raises(ValueError, match=r"needs 900 real and 100 adversarial.*has 990 and 20"):
        draw_mixed(is_adv, 1000, 0.10, np.random.default_rng(0))


def test_mixed_eval_reports_mean_inside_its_interval():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 2000)
    pred = np.where(rng.random(2000) < 0.9, y, (y + 1) % 10)
    is_adv = np.r_[np.zeros(1000, bool), np.ones(1000, bool)]
    out = mixed_eval(y, pred, is_adv, 1000, 0.05, draws=20, seed=0)
    for figure in ("acc_real", "acc_adv", "accuracy", "precision", "recall"):
        s = out[figure]
        assert s["low"] <= s["mean"] <= s["high"]
    assert out["acc_real"]["mean"] == pytest.approx(0.9, abs=0.03)


def test_interval_is_the_central_percentile_range():
    s = interval(np.arange(101) / 100)
    assert (s["low"], s["mean"], s["high"]) == pytest.approx((0.025, 0.5, 0.975))


def fake_metrics() -> dict:
    per_ratio = {"acc_real": {"mean": .9, "low": .88, "high": .92}, "acc_adv": {"mean": .8, "low": .7, "high": .9}}
    models = list(PAPER_NAMES)
    return {
        "targets": {"vgg19bn": {"test_acc": 0.9}},
        "gan": {}, "adversarial": {}, "hybrid": {}, "validation": {},
        "train": {m: dict(epochs=1, loss=0.1, train_acc=.9, test_acc=.9, precision=.9, recall=.9,
                          test_acc_real=.9, test_acc_adv=.8) for m in models},
        "eval_mixed": {"n_images": 1000, "draws": 20, "models": {m: {
            "whole_test": dict(accuracy=.9, precision=.9, recall=.9, acc_real=.9, acc_adv=.8),
            **{f"real{round(100 * (1 - f))}_adv{round(100 * f)}": per_ratio for f in PAPER_MIXED}} for m in models}},
    }


def test_report_has_every_model_every_ratio_and_the_papers_numbers():
    text = render(fake_metrics(), {"scale_info": {"name": "smoke"}}, {"data/hybrid/test.npz": "abc"},
                  "dvc exp run -S scale=smoke")
    for i, f in enumerate(sorted(PAPER_MIXED), start=3):
        assert f"## Table {i}: {round(100 * (1 - f))}% real, {round(100 * f)}% AEs" in text
    for name in PAPER_NAMES.values():
        assert text.count(f"| {name} |") >= 5  # Table 2, Tables 3-5, whole test split
    assert "99.94" in text and "96.4" in text  # the paper's ResNet-50 figures, marked as the paper's
    assert "dvc exp run -S scale=smoke" in text and "abc" in text


GOALS = {"target_clean_acc": 0.8, "gan_untargeted": 0.85, "gan_targeted": 0.7, "defended_hybrid_acc": 0.8}


def goal_metrics() -> dict:
    m = fake_metrics()
    m["targets"] = {"resnet56": {"test_acc": 0.85}, "vgg19bn": {"test_acc": 0.79}}
    m["gan"] = {"resnet56": {"untargeted_success": 0.9, "targeted_success": 0.75},
                "vgg19bn": {"untargeted_success": None, "targeted_success": None}}
    return m


def test_a_goal_is_missed_when_the_worst_model_misses_it_and_names_that_model():
    g = check_goals(goal_metrics(), GOALS)
    assert g["target_clean_acc"]["met"] is False
    assert (g["target_clean_acc"]["worst"], g["target_clean_acc"]["worst_model"]) == (0.79, "vgg19bn")
    assert g["defended_hybrid_acc"]["met"] is True  # every defended model at 0.9
    assert g["defended_hybrid_acc"]["real"]["resnet50"] == 0.9
    assert g["defended_hybrid_acc"]["adversarial"]["resnet50"] == 0.8


def test_a_target_with_nothing_attacked_counts_as_a_missed_gan_goal():
    g = check_goals(goal_metrics(), GOALS)
    assert g["gan_untargeted"]["met"] is False and g["gan_untargeted"]["worst_model"] == "vgg19bn"


def test_an_unknown_goal_is_refused_naming_the_known_ones():
    with pytest.raises(KeyError, match="unknown goal 'speed'.*target_clean_acc"):
        check_goals(goal_metrics(), {"speed": 1.0})


def test_report_puts_the_goals_first_with_their_status_and_the_papers_figure():
    m = goal_metrics()
    text = render(m, {"scale_info": {"name": "reference"}}, {}, "dvc exp run -S scale=reference",
                  check_goals(m, GOALS))
    section = text.split("## Goals for this scale")[1].split("\n## ")[0]
    assert "| target_clean_acc | ≥ 80 | **missed** | 79.0 (vgg19bn) |" in section
    assert "| defended_hybrid_acc | ≥ 80 | met |" in section
    assert "VGG19_bn 91.91" in section  # the paper's clean accuracy beside ours


def test_report_stage_refuses_an_unknown_goal_before_reading_any_metrics(tmp_path):
    (tmp_path / "params.yaml").write_text("report:\n  goals:\n    target_clean_acc: 0.8\n    speed: 1.0\n")
    r = subprocess.run([sys.executable, str(REPO / "src" / "report.py"), *stage_args("report")], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "params.yaml: 'report.goals' has unknown goals ['speed']; known: target_clean_acc" in r.stderr
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "reports").exists()


def test_hybrid_size_goal_is_checked_per_class_and_printed_as_a_count():
    m = goal_metrics()
    m["hybrid"] = {"splits": {"train": {"real": 3599, "adversarial": 3599,
                                        "per_class": {"cat": {"real": 1499, "adversarial": 1499},
                                                      "dog": {"real": 2100, "adversarial": 2100}}}}}
    g = check_goals(m, {"hybrid_train_pairs_per_class": 1500})
    entry = g["hybrid_train_pairs_per_class"]
    assert (entry["met"], entry["worst"], entry["worst_model"]) == (False, 1499, "cat")
    text = render(m, {"scale_info": {"name": "reference"}}, {}, "dvc exp run -S scale=reference", g)
    assert "| hybrid_train_pairs_per_class | ≥ 1,500 | **missed** | 1,499 (cat) |" in text
    assert "1,669 (automobile) to 2,439 (truck)" in text


def test_report_counts_failed_validation_checks():
    m = fake_metrics()
    m["validation"] = {"success": False, "n_checks": 2, "n_failed": 1, "checks": {
        "a": {"expectation": "expect_x", "success": True}, "b": {"expectation": "expect_y", "success": False}}}
    text = render(m, {"scale_info": {"name": "smoke"}}, {}, "dvc exp run -S scale=smoke")
    assert "Great Expectations validation: 2 checks, 1 failed" in text


def test_report_says_when_the_robustness_study_has_not_run():
    text = render(fake_metrics(), {"scale_info": {"name": "smoke"}}, {}, "dvc exp run -S scale=smoke")
    assert "## Does the defence hold?\n\nNot in this state" in text
