"""Stage eval_robustness on a tiny workspace: its params, the per-image outcomes it stores, the
paired comparisons of each defended model with its control, and a small headline."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from advhybrid.attacks.whitebox import AUTOATTACK_STANDARD
from advhybrid.evaluation.robustness import from_bits
from advhybrid.evaluation.stats import paired_comparison
from advhybrid.io import save_npz
from advhybrid.params import ParamsError, Section
from conftest import REPO, stage_args, synthetic_cifar


def stage():
    spec = importlib.util.spec_from_file_location("eval_robustness", REPO / "src" / "eval_robustness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY_AA = AUTOATTACK_STANDARD.model_dump() | dict(apgd_steps=2, apgdt_steps=2, fab_steps=2, square_queries=5)
PARAMS = dict(models=["vgg19bn"], fast_at_model="vgg19bn", n_images=10, eps_255=[2, 8], pgd_steps=2, pgd_restarts=2,
              pgd_check_steps=3, noise_eps_255=8, masking_ratio=0.5, autoattack=TINY_AA, batch_size=50, seed=0)


def test_the_stage_names_an_autoattack_budget_pgd_does_not_run_with_its_file_and_key():
    s = stage().settings(Section(PARAMS, "robustness", "p.yaml"))
    assert s.eps_255 == (2.0, 8.0) and s.autoattack.eps_255 == 8
    bad = Section(PARAMS | {"autoattack": TINY_AA | {"eps_255": 4.0}}, "robustness", "p.yaml")
    with pytest.raises(ParamsError, match=r"p.yaml: 'robustness.autoattack.eps_255'=4 must be one of 'robustness.eps_255' "
                                          r"\[2.0, 8.0\]"):
        stage().settings(bad)


def test_the_stage_names_a_bad_autoattack_setting_with_its_file_and_key():
    good = AUTOATTACK_STANDARD.model_dump()
    assert stage().autoattack_settings(Section({"autoattack": good}, "robustness", "p.yaml")) == AUTOATTACK_STANDARD
    bad = Section({"autoattack": {**good, "apgd_steps": 0, "square_querys": 10}}, "robustness", "p.yaml")
    with pytest.raises(ParamsError, match=r"p.yaml: 'robustness.autoattack.apgd_steps': Input should be greater than "
                                          r"or equal to 1; 'robustness.autoattack.square_querys': Extra inputs"):
        stage().autoattack_settings(bad)


def hybrid_test(n_per_class: int = 2) -> dict[str, np.ndarray]:
    """Each real image and its 'AE' (the image with noise), shuffled so pairs are found by source_id."""
    images, labels = synthetic_cifar(n_per_class, seed=3)
    n = len(labels)
    noisy = np.clip(images.astype(int) + np.random.default_rng(0).integers(-8, 9, images.shape), 0, 255).astype(np.uint8)
    order = np.random.default_rng(1).permutation(2 * n)
    return {"images": np.concatenate([images, noisy])[order], "labels": np.concatenate([labels, labels])[order],
            "is_adv": np.repeat([0, 1], n)[order], "source_id": np.tile(np.arange(n) + 100, 2)[order],
            "target_model": np.concatenate([np.full(n, -1), np.arange(n) % 2])[order],
            "target_names": np.array(["a", "b"])}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> tuple[Path, dict]:
    from advhybrid.models import build_model, save_model

    ws = tmp_path_factory.mktemp("rob")
    test = hybrid_test()
    save_npz(ws / "data/hybrid/test.npz", **test)
    for i, kind in enumerate(("defended", "control", "fast_at")):
        save_model(ws / f"models/{kind}/vgg19bn.pt", build_model("vgg19bn", 10, 0.0625, seed=i), "vgg19bn", 10, 0.0625)
    (ws / "params.yaml").write_text(yaml.safe_dump({"robustness": PARAMS}))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        stage().main(["--device", "cpu", *stage_args("eval_robustness")])
    return ws, test


def test_the_stage_stores_per_image_outcomes_and_pairs_each_defended_model_with_its_control(outputs):
    ws, test = outputs
    details = json.loads((ws / "reports/robustness.json").read_text())
    st = details["settings"]
    sub = np.array(st["subset_index"])
    assert len(sub) == 10 and (test["is_adv"][sub] == 0).all() and st["subset_class_counts"] == [1] * 10
    assert "autoattack_images" not in st and st["pgd_step_255"] == {"2": 2.5, "8": 10.0}
    d, c = details["defended/vgg19bn"], details["control/vgg19bn"]
    bits = d["whitebox"]["per_image"]
    assert set(bits) == {"clean", "noise", "pgd_2", "pgd_8", "pgd_autoattack", "unbounded"}
    assert all(len(v) == 10 for v in bits.values())
    assert not (from_bits(bits["pgd_autoattack"]) & ~from_bits(bits["pgd_8"])).any()
    want = paired_comparison(from_bits(bits["pgd_autoattack"]), from_bits(c["whitebox"]["per_image"]["pgd_autoattack"]))
    assert d["robust_vs_control"] == pytest.approx(want | {"figure": "pgd_autoattack", "eps_255": 8.0}, nan_ok=True)
    assert d["vs_control"]["adversarial"]["n"] == 20 and d["ae_effect"]["n_sources"] == 20
    assert {"adversarial", "real", "did"} <= set(d["ae_effect"])
    assert "robust_vs_control" not in c and "pgd_converged" in details["fast_at/vgg19bn"]["whitebox"]["checks"]
    assert all("decisive" in chk for m in ("defended/vgg19bn", "fast_at/vgg19bn")
               for chk in details[m]["whitebox"]["checks"].values())


def test_the_headline_stays_small(outputs):
    ws, _ = outputs
    metrics = json.loads((ws / "metrics/robustness.json").read_text())
    assert set(metrics) == {"defended/vgg19bn", "control/vgg19bn", "fast_at/vgg19bn"}
    for m in metrics.values():
        assert set(m) == {"clean", "noise", "pgd_2", "pgd_8", "pgd_autoattack", "hybrid_real", "hybrid_adv", "checks_failed"}
        assert m["pgd_autoattack"] <= m["pgd_8"] <= m["pgd_2"] <= m["clean"]
    rows = (ws / "plots/robustness/pgd.csv").read_text().splitlines()
    assert rows[0] == "model,eps_255,accuracy" and len(rows) == 1 + 3 * 2
