"""Hybrid CIFAR-10 assembly: pairing, grouped per-class split, the stage and the folder export."""
from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from advhybrid.attacks.quality import image_quality
from advhybrid.data.cifar import CLASSES
from advhybrid.data.hybrid import (
    SOURCE_STRIDE, SPLITS, HybridDataError, build_hybrid, pick_one_per_source,
)
from advhybrid.io import ContractError, load_npz, save_npz
from conftest import REPO, synthetic_cifar

TARGETS = ["t_a", "t_b", "t_c"]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "src" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_adversarial(src: np.ndarray, labels: np.ndarray, split: np.ndarray, index: np.ndarray,
                     g: np.random.Generator) -> dict[str, np.ndarray]:
    """AE file contents as generate_adversarial writes them: |noise| <= 8 grey levels, never 0."""
    noise = g.integers(-8, 9, src.shape)
    images = np.clip(src.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    images[:, 0, 0, 0] = src[:, 0, 0, 0] ^ 1  # at least one pixel differs, whatever the clipping
    return dict(
        images=images, labels=labels, source_split=split.astype(np.uint8), source_index=index,
        target_class=(labels + 1) % 10, k=g.uniform(0.1, 1.0, len(src)).astype(np.float32),
        pred=(labels + 1) % 10, **image_quality(images, src, "cpu"),
    )


def make_inputs(root: Path, n_train: int = 20, n_test: int = 6, keep: float = 0.6, seed: int = 0,
                scarce_class: int | None = None, scarce_keep: int = 0) -> dict:
    """Synthetic raw CIFAR-10 and per-target AE files under root; sources overlap across targets.

    scarce_class: that class keeps only `scarce_keep` sources with AEs (for shortfall tests).
    """
    g = np.random.default_rng(seed)
    raw = {}
    for s, (n, sd) in {"train": (n_train, seed), "test": (n_test, seed + 1)}.items():
        images, labels = synthetic_cifar(n, sd)
        raw[s] = dict(images=images, labels=labels, classes=np.array(CLASSES))
        save_npz(root / "raw" / "cifar10" / f"{s}.npz", **raw[s])
    n_tr, n_te = len(raw["train"]["labels"]), len(raw["test"]["labels"])
    split = np.r_[np.zeros(n_tr, np.int64), np.ones(n_te, np.int64)]
    index = np.r_[np.arange(n_tr), np.arange(n_te)]
    src = np.concatenate([raw["train"]["images"], raw["test"]["images"]])
    labels = np.concatenate([raw["train"]["labels"], raw["test"]["labels"]])
    allowed = np.ones(len(labels), bool)
    if scarce_class is not None:
        members = np.flatnonzero(labels == scarce_class)
        allowed[members[scarce_keep:]] = False
    adversarial = {}
    for t in TARGETS:
        rows = np.flatnonzero((g.random(len(labels)) < keep) & allowed)
        adversarial[t] = make_adversarial(src[rows], labels[rows], split[rows], index[rows], g)
        save_npz(root / "adversarial" / f"{t}.npz", **adversarial[t])
    return {"raw": raw, "adversarial": adversarial}


def write_params(root: Path, **overrides) -> Path:
    hybrid = dict(targets=TARGETS, val_per_class=3, test_per_class=3, train_cap_per_class=None, seed=0,
                  balance_tolerance=1.0, max_linf=0.0334, min_ssim=0.0, ssim_tolerance=0.001)
    hybrid.update(overrides)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"hybrid": hybrid, "other": {"x": 1}}))
    return path


def stage_args(root: Path) -> list[str]:
    return ["--params", str(root / "params.yaml"), "--raw", str(root / "raw" / "cifar10"),
            "--adversarial", str(root / "adversarial"), "--out", str(root / "hybrid"),
            "--metrics", str(root / "metrics" / "hybrid.json"),
            "--validation-metrics", str(root / "metrics" / "validation.json"),
            "--plots", str(root / "plots" / "hybrid" / "counts.csv"),
            "--report", str(root / "reports" / "validation")]


@pytest.fixture(scope="module")
def made_inputs(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("inputs")
    return root, make_inputs(root)  # about 2 s (image quality of every AE): once per module


@pytest.fixture
def inputs(made_inputs: tuple[Path, dict], tmp_path: Path) -> dict:
    """make_inputs(tmp_path), copied from the module's one: tests may change their copy."""
    root, made = made_inputs
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    return copy.deepcopy(made)


def build(inputs: dict, val: int = 3, test: int = 3, cap=None, seed: int = 0):
    return build_hybrid(inputs["raw"], inputs["adversarial"], TARGETS, val, test, cap, seed)


# --- library ---------------------------------------------------------------------------------


def test_pick_one_per_source_keeps_every_source_once_and_varies_the_target():
    sid = np.repeat(np.arange(200), 3)  # every source attacked by three targets
    picks = [pick_one_per_source(sid, np.random.default_rng(s)) for s in range(2)]
    for p in picks:
        assert np.array_equal(np.sort(sid[p]), np.arange(200))
    offsets = picks[0] % 3
    assert set(offsets.tolist()) == {0, 1, 2}  # a random target, not always the first
    assert not np.array_equal(picks[0], picks[1])


def test_every_split_holds_pairs_of_one_real_and_its_adversarial(inputs):
    splits, _ = build(inputs)
    for s, a in splits.items():
        real, adv = a["is_adv"] == 0, a["is_adv"] == 1
        assert np.array_equal(np.sort(a["source_id"][real]), np.sort(a["source_id"][adv])), s
        assert len(np.unique(a["source_id"][real])) == real.sum()
        assert (a["target_model"][real] == -1).all() and (a["target_model"][adv] >= 0).all()
        assert (a["k"][real] == 0).all() and (a["k"][adv] > 0).all()
        # the real image is the raw source itself, and the AE's label is its source's true label
        split, index = np.divmod(a["source_id"][real], SOURCE_STRIDE)
        train, test = inputs["raw"]["train"]["images"], inputs["raw"]["test"]["images"]
        rows = np.where(split == 0, index, len(train) + index)
        assert np.array_equal(a["images"][real], np.concatenate([train, test])[rows])
        for key in ("images", "labels", "is_adv", "source_id", "target_model", "k"):
            assert len(a[key]) == len(a["images"])
        assert a["images"].dtype == np.uint8 and a["labels"].dtype == np.int64
        assert a["is_adv"].dtype == np.uint8 and a["source_id"].dtype == np.int64
        assert a["target_model"].dtype == np.int8 and a["k"].dtype == np.float32
        assert list(a["target_names"]) == TARGETS


def test_grouped_split_never_puts_a_source_in_two_splits(inputs):
    splits, _ = build(inputs)
    ids = {s: set(a["source_id"].tolist()) for s, a in splits.items()}
    assert not ids["train"] & ids["val"]
    assert not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]


def test_counts_per_class_match_params_and_train_takes_the_rest(inputs):
    splits, summary = build(inputs, val=2, test=4)
    for s, want in (("val", 2), ("test", 4)):
        for flag in (0, 1):
            counts = np.bincount(splits[s]["labels"][splits[s]["is_adv"] == flag], minlength=10)
            assert counts.tolist() == [want] * 10
    used = sum(int((a["is_adv"] == 1).sum()) for a in splits.values())
    assert used == summary["pool_sources"]  # no cap: every source with an AE lands in some split


def test_train_cap_limits_pairs_per_class_as_int_or_mapping(inputs):
    splits, _ = build(inputs, cap=5)
    train = splits["train"]
    assert np.bincount(train["labels"][train["is_adv"] == 1], minlength=10).max() == 5
    caps = {c: 1 + i % 3 for i, c in enumerate(CLASSES)}
    splits, _ = build(inputs, cap=caps)
    counts = np.bincount(splits["train"]["labels"][splits["train"]["is_adv"] == 1], minlength=10)
    assert counts.tolist() == list(caps.values())
    with pytest.raises(HybridDataError, match="unknown \\['plane'\\]"):
        build(inputs, cap={**caps, "plane": 3})


def test_shortfall_names_the_class_and_how_many_pairs_it_has(tmp_path):
    data = make_inputs(tmp_path, scarce_class=3, scarce_keep=5)
    with pytest.raises(HybridDataError) as e:
        build(data, val=3, test=3)
    msg = str(e.value)
    assert "class 3 'cat' has 5" in msg and "7 per class needed" in msg
    assert "'dog'" not in msg


def test_same_seed_same_splits_other_seed_other_splits(inputs):
    a, _ = build(inputs, seed=1)
    b, _ = build(inputs, seed=1)
    c, _ = build(inputs, seed=2)
    assert all(np.array_equal(a[s]["source_id"], b[s]["source_id"]) for s in SPLITS)
    assert not np.array_equal(a["val"]["source_id"], c["val"]["source_id"])


def test_adversarial_label_that_is_not_the_source_label_is_refused(inputs):
    inputs["adversarial"]["t_b"]["labels"][0] = (inputs["adversarial"]["t_b"]["labels"][0] + 1) % 10
    with pytest.raises(ContractError, match="adversarial/t_b: 1 AE label"):
        build(inputs)


def test_raw_label_outside_the_classes_is_refused(inputs):
    inputs["raw"]["train"]["labels"][0] = 10
    with pytest.raises(ContractError, match="raw/train: labels must be"):
        build(inputs)


# --- the stage and the export ------------------------------------------------------------------


@pytest.mark.integration
def test_stage_end_to_end_writes_validated_splits_metrics_plots_and_docs(tmp_path):
    make_inputs(tmp_path)
    write_params(tmp_path, train_cap_per_class=8)
    script = REPO / "src" / "build_hybrid_splits.py"
    run = subprocess.run([sys.executable, str(script), *stage_args(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for s in SPLITS:
        a = load_npz(tmp_path / "hybrid" / f"{s}.npz", required=[
            "images", "labels", "is_adv", "source_id", "target_model", "k", "target_names"])
        assert (a["is_adv"] == 1).sum() == (a["is_adv"] == 0).sum()
    metrics = json.loads((tmp_path / "metrics" / "hybrid.json").read_text())
    assert metrics["splits"]["val"]["per_class"]["cat"] == {"real": 3, "adversarial": 3}
    assert metrics["splits"]["train"]["adversarial"] == 80  # 8 per class, every class has more
    assert sum(v["train"] + v["val"] + v["test"] for v in metrics["per_target"].values()) == \
        metrics["total"]["adversarial"]
    validation = json.loads((tmp_path / "metrics" / "validation.json").read_text())
    assert validation["success"] and validation["n_failed"] == 0
    assert validation["checks"]["no_source_in_two_splits"]["success"]
    rows = (tmp_path / "plots" / "hybrid" / "counts.csv").read_text().splitlines()
    assert rows[0] == "split,class,kind,count" and len(rows) == 1 + 3 * 10 * 2
    assert "val,cat,adversarial,3" in rows
    assert (tmp_path / "reports" / "validation" / "index.html").is_file()
    leftovers = [p for p in tmp_path.rglob(".*") if p.name.endswith(".tmp")]
    assert not leftovers


def test_stage_shortfall_fails_before_writing_anything(tmp_path):
    make_inputs(tmp_path, scarce_class=7, scarce_keep=4)
    write_params(tmp_path)
    stage = load_script("build_hybrid_splits")
    with pytest.raises(HybridDataError, match="class 7 'horse' has 4"):
        stage.main(stage_args(tmp_path))
    assert not (tmp_path / "hybrid").exists() and not (tmp_path / "metrics").exists()


def test_stage_reports_a_missing_params_key(tmp_path):
    make_inputs(tmp_path)
    path = write_params(tmp_path)
    doc = yaml.safe_load(path.read_text())
    del doc["hybrid"]["max_linf"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(KeyError, match="hybrid.max_linf"):
        load_script("build_hybrid_splits").main(stage_args(tmp_path))


def test_export_writes_the_papers_folder_tree(tmp_path, inputs):
    splits, _ = build(inputs)
    for s, a in splits.items():
        save_npz(tmp_path / "hybrid" / f"{s}.npz", **a)
    out = tmp_path / "export"
    (out / "stale").mkdir(parents=True)  # a previous export is replaced whole
    load_script("export_hybrid_folders").main(["--hybrid", str(tmp_path / "hybrid"), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)
    for s, a in splits.items():
        assert sorted(p.name for p in (out / s).iterdir()) == sorted(CLASSES)
        files = sorted((out / s).rglob("*.png"))
        assert len(files) == len(a["images"])
        i = int(np.flatnonzero(a["is_adv"] == 1)[0])
        cls, sid, target = CLASSES[a["labels"][i]], a["source_id"][i], TARGETS[a["target_model"][i]]
        adv_png = out / s / cls / "1" / f"{sid}_{target}.png"
        real_png = out / s / cls / "0" / f"{sid}.png"
        assert np.array_equal(np.asarray(Image.open(adv_png)), a["images"][i])
        j = int(np.flatnonzero((a["is_adv"] == 0) & (a["source_id"] == sid))[0])
        assert np.array_equal(np.asarray(Image.open(real_png)), a["images"][j])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]
