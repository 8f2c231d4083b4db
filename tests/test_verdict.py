"""The report's verdict and the AE effect: figures computed by hand, a rule that can go either way."""
import numpy as np
import pytest

from advhybrid.evaluation import effect, verdict
from advhybrid.evaluation.stats import paired_comparison


def test_the_difference_in_differences_and_its_interval_match_a_hand_computed_example():
    # four sources; rows: real images (sources 0..3), then their AEs (same order of source ids, shuffled rows)
    test = {"is_adv": np.array([0, 0, 0, 0, 1, 1, 1, 1]), "source_id": np.array([0, 1, 2, 3, 3, 2, 1, 0])}
    # defended: right on every real image and on the AEs of sources 0, 1, 2 (rows 7, 6, 5)
    ok_d = np.array([1, 1, 1, 1, 0, 1, 1, 1], bool)
    # control: right on real 0, 1, 2 and on the AE of source 0 only
    ok_c = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)
    e = effect.ae_effect(ok_d, ok_c, test, n_boot=4000, seed=1)
    # AEs: 3/4 - 1/4 = +0.5; real: 4/4 - 3/4 = +0.25; DiD = +0.25
    assert (e["adversarial"]["diff"], e["real"]["diff"], e["did"]["diff"]) == (0.5, 0.25, 0.25)
    assert e["n_sources"] == 4 and e["acc"]["control_adversarial"] == 0.25
    # per-source DiD values are (0, +1, +1, -1 + ... ) -> the bootstrap interval spans 0 and stays in [-1, 1]
    assert -1 <= e["did"]["low"] < 0 < e["did"]["high"] <= 1
    # the same outcomes for both models: every difference is exactly 0, interval included
    same = effect.ae_effect(ok_d, ok_d, test)
    assert all(same[f] == {"diff": 0.0, "low": 0.0, "high": 0.0} for f in effect.FIGURES)


def test_the_bootstrap_interval_narrows_with_more_sources_and_covers_a_clear_effect():
    rng = np.random.default_rng(0)
    n = 4000
    test = {"is_adv": np.repeat([0, 1], n), "source_id": np.tile(np.arange(n), 2)}
    real_d, real_c = rng.random(n) < .7, rng.random(n) < .7
    adv_d, adv_c = rng.random(n) < .7, rng.random(n) < .5   # +20 points on the AEs only
    e = effect.ae_effect(np.r_[real_d, adv_d], np.r_[real_c, adv_c], test)
    assert 0.15 < e["did"]["low"] < e["did"]["diff"] < e["did"]["high"] < 0.25
    small = effect.ae_effect(np.r_[real_d[:200], adv_d[:200]], np.r_[real_c[:200], adv_c[:200]],
                             {"is_adv": np.repeat([0, 1], 200), "source_id": np.tile(np.arange(200), 2)})
    assert small["did"]["high"] - small["did"]["low"] > 2 * (e["did"]["high"] - e["did"]["low"])


def test_the_seed_effect_is_a_t_interval_over_per_seed_differences():
    seeds = [{"seed": s, "defended": {"test_acc_adv": a, "test_acc_real": r}, "control": {"test_acc_adv": ca, "test_acc_real": cr}}
             for s, a, r, ca, cr in ((0, .60, .62, .57, .60), (1, .58, .60, .56, .59), (2, .61, .63, .57, .60))]
    e = effect.seed_effect(seeds)
    assert e["did"]["values"] == pytest.approx([0.01, 0.01, 0.01]) and e["did"]["mean"] == pytest.approx(0.01)
    assert e["adversarial"]["values"] == pytest.approx([0.03, 0.02, 0.04])
    # t(0.975, 2) = 4.3027; sd of (3, 2, 4) points = 1 point -> half-width 4.3027 / sqrt(3) points
    assert e["adversarial"]["high"] - e["adversarial"]["mean"] == pytest.approx(0.043027 / 3 ** 0.5, rel=1e-4)
    assert np.isnan(effect.t_interval([0.5])["low"])


def outcomes(k_defended: int, k_control: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Per-image robust outcomes: the control's robust images are a subset of the defended model's."""
    d, c = np.zeros(n, bool), np.zeros(n, bool)
    d[:k_defended], c[:k_control] = True, True
    return d, c


def test_the_paired_verdict_does_not_hold_for_2_percent_against_0_of_500():
    c = paired_comparison(*outcomes(10, 0))
    assert c["p_mcnemar"] < 0.05 and c["diff_low"] > 0          # significant, interval above 0 ...
    assert verdict.decide(c) == ("does not hold", "a gain below the 5-point minimum")  # ... but no defence


@pytest.mark.parametrize("k_d, k_c, expected", [(100, 0, "holds"), (60, 0, "holds"), (100, 100, "does not hold"),
                                                (0, 100, "does not hold"), (4, 0, "does not hold")])
def test_the_paired_verdict_holds_only_for_a_significant_gain_of_at_least_five_points(k_d, k_c, expected):
    assert verdict.decide(paired_comparison(*outcomes(k_d, k_c)))[0] == expected


def acc(a, lo, hi, n=500):
    return {"acc": a, "low": lo, "high": hi, "n": n}


def fake_details(k_defended: int, k_control: int = 0) -> dict:
    def model(clean, robust):
        return {"whitebox": {"clean": acc(clean, clean - .04, clean + .04), "noise": acc(clean, clean - .04, clean + .04),
                             "pgd": {"8": robust}, "pgd_autoattack": robust,
                             "checks": {"monotone": {"ok": True, "detail": "", "decisive": False},
                                        "unbounded": {"ok": True, "detail": "", "decisive": True}}},
                "hybrid_test": {"adversarial": acc(.6, .58, .62), "real": acc(.62, .6, .64)}}
    rd, rc = acc(k_defended / 500, 0, .05), acc(k_control / 500, 0, .05)
    d = {"defended/resnet50": model(.6, rd), "control/resnet50": model(.62, rc),
         "fast_at/resnet50": model(.5, acc(.3, .26, .34)), "settings": {"n_images": 500, "autoattack_deviations": {}}}
    d["defended/resnet50"]["robust_vs_control"] = paired_comparison(*outcomes(k_defended, k_control))
    d["defended/resnet50"]["ae_effect"] = {"n_sources": 5000, "adversarial": {"diff": .029, "low": .012, "high": .046},
                                           "real": {"diff": .027, "low": .011, "high": .043},
                                           "did": {"diff": .002, "low": -.009, "high": .013}}
    return d


ADAPTIVE = {"resnet50": {"defended": {"acc_k_search": acc(.05, .03, .08), "acc_k1": acc(.3, .26, .34), "gan_steps": 1450},
                         "control": {"acc_k_search": acc(.04, .02, .07), "acc_k1": acc(.28, .24, .32)},
                         "paired_k_search": {"diff": .01, "diff_low": -.01, "diff_high": .03, "p_mcnemar": 0.4}}}


def test_the_report_leads_with_the_difference_in_differences_and_states_the_verdict_either_way():
    text = "\n".join(verdict.section(fake_details(0), ADAPTIVE, []))
    effect_line = next(line for line in text.splitlines() if line.startswith("- ResNet-50"))
    # "better on the AEs" never stands without the same figure on the real images beside it
    assert "+2.9 [+1.2, +4.6] points on the Hybrid test AEs and by +2.7 [+1.1, +4.3] on their real sources" in effect_line
    assert "AE-specific effect of +0.2 [-0.9, +1.3] points" in effect_line and "no AE-specific effect" in effect_line
    assert "| ResNet-50 (5,000 sources) | +2.9 [+1.2, +4.6] | +2.7 [+1.1, +4.3] | +0.2 [-0.9, +1.3] |" in text
    assert "**the Hybrid defence does not hold under white-box attack** for ResNet-50" in text
    assert "after 1,450 generator steps, leaves 5.0 [3.0, 8.0]%" in text and "McNemar p = 0.4" in text
    holds = "\n".join(verdict.section(fake_details(100), ADAPTIVE, []))
    assert "**the Hybrid defence holds under white-box attack** for ResNet-50" in holds
    assert verdict.verdicts(fake_details(100)) == {"resnet50": "holds"}
    assert verdict.verdicts(fake_details(10)) == {"resnet50": "does not hold"}


def test_the_checks_line_says_which_checks_a_non_zero_figure_decided():
    text = "\n".join(verdict.checks(fake_details(0)))
    assert "all passed. Decided by a non-zero figure for at least one model: unbounded." in text
    assert "Could not fail for some model (every figure compared was 0): monotone." in text
    d = fake_details(0)
    d["control/resnet50"]["whitebox"]["checks"]["unbounded"] = {"ok": False, "detail": "PGD at 255/255 keeps 0.300"}
    assert "**flagged**: control/resnet50: unbounded (PGD at 255/255 keeps 0.300)" in "\n".join(verdict.checks(d))


def test_the_report_prints_the_seed_level_interval_of_the_ae_effect():
    seeds = [{"model": "resnet50", "seed": s, "defended": {"test_acc_adv": a, "test_acc_real": r},
              "control": {"test_acc_adv": ca, "test_acc_real": cr}}
             for s, a, r, ca, cr in ((0, .60, .62, .57, .60), (1, .58, .60, .56, .59), (2, .61, .63, .57, .60))]
    text = "\n".join(verdict.section(fake_details(0), {}, seeds, effect.seed_effect(seeds)))
    assert "| ResNet-50, mean over seeds 0, 1, 2 (t-interval) | +3.0 [+0.5, +5.5] | +2.0 [-0.5, +4.5] | +1.0 [+1.0, +1.0] |" in text
    assert "Over 3 training seeds (0, 1, 2), ResNet-50's AE-specific effect is +1.0 points on average" in text


def test_an_underflowing_p_value_reads_as_p_below_the_printed_digits():
    text = "\n".join(verdict.sentences(fake_details(300), {}, None, []))
    assert "McNemar p < 1e-4" in text and "p = <" not in text


def test_the_report_breaks_the_hybrid_aes_down_by_the_target_that_made_them():
    d = fake_details(0)
    d["defended/resnet50"]["hybrid_test"]["adversarial_by_target"] = {
        "resnet56": {"n": 40, "acc": 0.5, "low": 0.35, "high": 0.65}, "vgg19bn": {"n": 60, "acc": 0.25, "low": 0.16, "high": 0.37}}
    text = "\n".join(verdict.transfer(d))
    assert "| model | resnet56 AEs | vgg19bn AEs |" in text
    assert "| defended ResNet-50 | 50.0 [35.0, 65.0] | 25.0 [16.0, 37.0] |" in text and "resnet56 40, vgg19bn 60" in text
