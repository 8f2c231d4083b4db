"""The smoke scale runs every stage through the real `dvc`, and DVC sees the result as complete."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import assert_lock_lists_every_stage, run

pytestmark = pytest.mark.slow


def test_dvc_lock_lists_every_stage_and_nothing_is_stale(smoke_repo):
    lock = yaml.safe_load((smoke_repo / "dvc.lock").read_text())
    assert_lock_lists_every_stage(lock)
    status = run(["dvc", "status", "--json"], smoke_repo).stdout
    assert json.loads(status) == {}


def test_dag_chains_the_papers_method(smoke_repo):
    dag = run(["dvc", "dag", "--dot"], smoke_repo).stdout
    for a, b in [("download_cifar", "train_targets"), ("train_targets", "train_gan"),
                 ("train_gan", "generate_adversarial"), ("generate_adversarial", "build_hybrid_splits"),
                 ("build_hybrid_splits", "train@resnet50"), ("train@repvgg_a2", "eval_mixed"),
                 ("eval_mixed", "report")]:
        assert f'"{a}" -> "{b}"' in dag, (a, b, dag)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = v
    return out


def test_metrics_show_is_a_few_flat_numbers_per_row(smoke_repo):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], smoke_repo).stdout)
    files = {f: _flat(v["data"]) for f, v in next(iter(shown.values()))["data"].items()}
    models = ("resnet50", "vgg19bn", "shufflenetv2", "repvgg_a2")
    targets = ("resnet56", "vgg19bn", "mobilenetv2", "shufflenetv2", "repvgg_a2")
    expected = ([f"metrics/summary/models/{m}.json" for m in models]
                + [f"metrics/summary/controls/{m}.json" for m in (*models, "fast_at")]
                + [f"metrics/summary/targets/{t}.json" for t in targets]
                + ["metrics/summary/hybrid.json", "metrics/summary/goals/target_clean_acc.json"])
    assert set(expected) <= set(files), sorted(files)
    assert all(f.startswith("metrics/summary/") for f in files), "a stage record is still declared a metric"
    values = [v for figures in files.values() for v in figures.values()]
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values), files
    assert len(values) <= 80, f"{len(values)} figures: `dvc exp show` would not fit a terminal"
    assert all(0.0 <= files[f"metrics/summary/targets/{t}.json"]["acc"] <= 1.0 for t in targets)
    assert files["metrics/summary/hybrid.json"]["failed"] == 0
    assert set(files["metrics/summary/goals/target_clean_acc.json"]) == {"worst", "met"}
    # the records the figures come from stay whole, as plain outputs the report reads
    validation = json.loads((smoke_repo / "metrics/validation.json").read_text())
    assert files["metrics/summary/hybrid.json"]["checks"] == len(validation["checks"])


def test_training_curves_and_report_are_written(smoke_repo):
    for name in ("resnet56", "vgg19bn", "mobilenetv2", "shufflenetv2", "repvgg_a2"):
        header = (smoke_repo / "plots" / "targets" / f"{name}.csv").read_text().splitlines()[0]
        assert header.startswith("epoch,lr,train_loss,train_acc,val_loss,val_acc")
    report = (smoke_repo / "reports" / "results.md").read_text()
    assert "dvc exp run -S scale=smoke" in report
    for name in ("ResNet-50", "VGG19_bn", "ShuffleNetV2", "RepVGG_a2"):
        assert f"| {name} |" in report


def test_params_yaml_records_the_smoke_scale(smoke_repo):
    params = yaml.safe_load((smoke_repo / "params.yaml").read_text())
    assert params["scale_info"]["name"] == "smoke"
    assert params["data"]["source"].endswith("cifar10-jpeg.tar.gz")


def test_dag_has_the_robustness_study(smoke_repo):
    dag = run(["dvc", "dag", "--dot"], smoke_repo).stdout
    for a, b in [("build_hybrid_splits", "control@resnet50"), ("build_hybrid_splits", "train_fast_at"),
                 ("train@resnet50", "eval_robustness"), ("control@repvgg_a2", "eval_robustness"),
                 ("train_fast_at", "eval_robustness"), ("train@resnet50", "adaptive_attack"),
                 ("control@resnet50", "adaptive_attack"), ("build_hybrid_splits", "seed@1"),
                 ("eval_robustness", "report"), ("adaptive_attack", "report"), ("seed@1", "report")]:
        assert f'"{a}" -> "{b}"' in dag, (a, b)


def test_robustness_study_reports_every_model_and_its_checks(smoke_repo):
    rob = json.loads((smoke_repo / "metrics/robustness.json").read_text())
    expected = {f"{k}/{m}" for k in ("defended", "control") for m in
                ("resnet50", "vgg19bn", "shufflenetv2", "repvgg_a2")} | {"fast_at/resnet50"}
    assert set(rob) == expected
    for figures in rob.values():  # flat numbers that `dvc metrics diff` can compare
        assert all(isinstance(v, (int, float)) for v in figures.values())
        assert {"clean", "noise", "pgd_1", "pgd_8", "pgd_16", "pgd_autoattack", "hybrid_adv"} <= set(figures)
    details = json.loads((smoke_repo / "reports/robustness.json").read_text())
    assert "pgd_converged" in details["fast_at/resnet50"]["whitebox"]["checks"]
    assert details["settings"]["autoattack_deviations"]  # smoke shortens AutoAttack, and says so
    adaptive = json.loads((smoke_repo / "metrics/adaptive.json").read_text())
    assert set(adaptive["resnet50"]) == {"defended", "control", "paired_k1", "paired_k_search"}
    d = details["defended/resnet50"]
    assert {"robust_vs_control", "vs_control", "ae_effect"} <= set(d)
    assert len(d["whitebox"]["per_image"]["pgd_autoattack"]) == details["settings"]["n_images"]
    assert "unbounded" in d["whitebox"]["checks"]
    report = (smoke_repo / "reports/results.md").read_text()
    assert report.index("## Does the defence hold?") < report.index("## Goals for this scale")
    assert "the Hybrid defence" in report and "AutoAttack deviates from the standard version" in report
    assert (smoke_repo / "plots/robustness/pgd.png").stat().st_size > 1000


def test_the_control_trains_on_the_defended_models_sources_with_each_ae_replaced_by_its_real_image(smoke_repo):
    import numpy as np

    from advhybrid.data.control import load_control
    from advhybrid.io import load_npz

    hybrid = load_npz(smoke_repo / "data/hybrid/train.npz")
    (images, labels), _, _ = load_control(smoke_repo / "data/hybrid")
    adv = hybrid["is_adv"] == 1
    assert np.array_equal(labels, hybrid["labels"]) and len(images) == len(hybrid["images"])
    assert np.array_equal(images[~adv], hybrid["images"][~adv])
    real_of = {int(s): hybrid["images"][i] for i, s in zip(np.flatnonzero(~adv), hybrid["source_id"][~adv])}
    assert all(np.array_equal(images[i], real_of[int(hybrid["source_id"][i])]) for i in np.flatnonzero(adv))
    assert not np.array_equal(images[adv], hybrid["images"][adv])  # the AEs really are gone
    m = json.loads((smoke_repo / "metrics/control/resnet50.json").read_text())
    assert m["train_images"] == len(hybrid["labels"])
