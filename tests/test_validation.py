"""The Great Expectations suite: valid splits pass; each planted fault fails the check named for it,
in the library and in the stage, which then leaves every previous output untouched."""
from __future__ import annotations

import copy
import json
import socket
from typing import Callable

import numpy as np
import pytest

from advhybrid.data.cifar import CLASSES
from advhybrid.data.hybrid import build_hybrid
from advhybrid.data.validation import Expectations, ValidationFailed, validate_hybrid
from test_hybrid import TARGETS, load_script, make_inputs, stage_args, write_params

EXPECT = Expectations(class_names=CLASSES, n_targets=len(TARGETS), val_per_class=3, test_per_class=3,
                      train_cap=[None] * 10, max_linf=0.0334, min_ssim=0.0, ssim_tolerance=0.001,
                      balance_tolerance=1.0)


@pytest.fixture(scope="module")
def valid_splits(tmp_path_factory) -> dict:
    data = make_inputs(tmp_path_factory.mktemp("inputs"))
    splits, _ = build_hybrid(data["raw"], data["adversarial"], TARGETS, 3, 3, None, 0)
    return splits


def pair_rows(a: dict, nth: int = 0, cls: int | None = None) -> tuple[int, int]:
    """(real row, adversarial row) of the nth pair in a split, optionally of one class."""
    adv = np.flatnonzero((a["is_adv"] == 1) & ((a["labels"] == cls) if cls is not None else True))[nth]
    real = np.flatnonzero((a["is_adv"] == 0) & (a["source_id"] == a["source_id"][adv]))[0]
    return int(real), int(adv)


def source_in_two_splits(s: dict) -> None:
    real, adv = pair_rows(s["val"])
    s["val"]["source_id"][[real, adv]] = s["train"]["source_id"][0]


def duplicated_image(s: dict) -> None:
    a = s["train"]
    (r1, a1), (r2, a2) = pair_rows(a, 0, cls=4), pair_rows(a, 1, cls=4)
    a["images"][[r2, a2]] = a["images"][[r1, a1]]  # pair 2 now a byte copy of pair 1
    a["linf"][a2] = a["linf"][a1]


def label_ten(s: dict) -> None:
    s["val"]["labels"][0] = 10


def broken_balance(s: dict) -> None:
    keep = np.ones(len(s["test"]["labels"]), bool)
    keep[pair_rows(s["test"])[1]] = False
    s["test"] = {k: v[keep] if v.ndim and len(v) == len(keep) else v for k, v in s["test"].items()}


def image_31x32(s: dict) -> None:
    s["train"]["images"] = np.ascontiguousarray(s["train"]["images"][:, :31])


def linf_misrecorded(s: dict) -> None:
    s["val"]["linf"][pair_rows(s["val"])[1]] += 3 / 255


def ssim_misrecorded(s: dict) -> None:
    s["train"]["ssim"][pair_rows(s["train"])[1]] -= 0.01  # what TF32 convolutions can do


def linf_over_bound(s: dict) -> None:
    a = s["val"]
    real, adv = pair_rows(a)
    a["images"][adv] = np.clip(a["images"][real].astype(np.int16) + 20, 0, 255).astype(np.uint8)
    a["linf"][adv] = np.abs(a["images"][adv].astype(np.int16) - a["images"][real]).max() / 255


def adversarial_equals_source(s: dict) -> None:
    real, adv = pair_rows(s["test"])
    s["test"]["images"][adv] = s["test"]["images"][real]


def missing_array(s: dict) -> None:
    del s["val"]["k"]


def labels_int32(s: dict) -> None:
    s["test"]["labels"] = s["test"]["labels"].astype(np.int32)


def real_with_a_target(s: dict) -> None:
    s["train"]["target_model"][pair_rows(s["train"])[0]] = 1


FAULTS: dict[str, tuple[Callable, str]] = {
    "source in two splits": (source_in_two_splits, "no_source_in_two_splits"),
    "duplicated image": (duplicated_image, "no_duplicate_image_in_split"),
    "label of 10": (label_ten, "labels_in_range"),
    "broken real/adversarial balance": (broken_balance, "real_adv_balanced_per_class"),
    "31x32 image": (image_31x32, "image_shape_32x32x3"),
    "recorded linf disagrees with the pixels": (linf_misrecorded, "adv_linf_matches_recomputed"),
    "recorded SSIM disagrees with the pixels": (ssim_misrecorded, "adv_ssim_matches_recomputed"),
    "linf over the bound": (linf_over_bound, "adv_linf_within_bound"),
    "AE identical to its source": (adversarial_equals_source, "adv_differs_from_source"),
    "missing array": (missing_array, "schema_arrays_present"),
    "labels stored as int32": (labels_int32, "schema_dtypes"),
    "real image with a target model": (real_with_a_target, "target_model_matches_kind"),
}


def test_valid_splits_pass_every_check(valid_splits):
    report = validate_hybrid(valid_splits, EXPECT)
    assert report.success, report.failures()
    names = [c["name"] for c in report.checks]
    assert len(names) == len(set(names)) >= 20
    report.raise_for_failures()  # no-op
    doc = json.loads(json.dumps(report.to_json()))  # JSON-safe
    assert doc["checks"]["adv_linf_matches_recomputed"]["observed"]["unexpected_count"] == 0
    assert set(doc["checks"]["labels_in_range"]) >= {"success", "observed"}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_fails_the_check_named_for_it(valid_splits, fault):
    plant, check = FAULTS[fault]
    splits = copy.deepcopy(valid_splits)
    plant(splits)
    report = validate_hybrid(splits, EXPECT)
    assert check in [c["name"] for c in report.failures()]
    with pytest.raises(ValidationFailed, match=check):
        report.raise_for_failures()


@pytest.mark.parametrize("change, check", [
    ({"val_per_class": 4}, "val_test_counts_as_asked"),
    ({"train_cap": [2] * 10}, "train_counts_within_cap"),
    ({"balance_tolerance": 0.01}, "class_balance_within_tolerance"),
    ({"min_ssim": 0.9999}, "adv_ssim_in_range"),
])
def test_counts_and_bounds_other_than_params_ask_fail(valid_splits, change, check):
    expect = Expectations(**{**EXPECT.__dict__, **change})
    failed = [c["name"] for c in validate_hybrid(valid_splits, expect).failures()]
    assert failed == [check]


def test_failure_message_names_split_and_class(valid_splits):
    splits = copy.deepcopy(valid_splits)
    broken_balance(splits)
    with pytest.raises(ValidationFailed) as e:
        validate_hybrid(splits, EXPECT).raise_for_failures()
    assert "'split': 'test'" in str(e.value) and "'class_name': " in str(e.value)


def test_validation_builds_data_docs_without_touching_the_network(valid_splits, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Great Expectations tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    report = validate_hybrid(valid_splits, EXPECT, docs_dir=tmp_path / "docs")
    assert report.success
    pages = list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert (tmp_path / "docs" / "index.html").is_file() and len(pages) == 5
    assert any("no_source_in_two_splits" in p.read_text() for p in pages)


@pytest.mark.parametrize("fault", ["source in two splits", "duplicated image", "label of 10",
                                   "broken real/adversarial balance", "31x32 image"])
def test_stage_fails_on_a_planted_fault_and_leaves_outputs_untouched(tmp_path, monkeypatch, fault):
    make_inputs(tmp_path)
    write_params(tmp_path)
    stage = load_script("build_hybrid_splits")
    plant, check = FAULTS[fault]

    def build_with_fault(*args, **kwargs):
        splits, summary = build_hybrid(*args, **kwargs)
        plant(splits)
        return splits, summary

    monkeypatch.setattr(stage, "build_hybrid", build_with_fault)
    before = {}
    for rel in ["hybrid/train.npz", "hybrid/val.npz", "hybrid/test.npz", "metrics/hybrid.json",
                "metrics/validation.json", "plots/hybrid/counts.csv", "reports/validation/index.html"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"previous {rel}")
        before[rel] = f"previous {rel}"
    with pytest.raises(ValidationFailed, match=check):
        stage.main(stage_args(tmp_path))
    outputs = ("hybrid", "metrics", "plots", "reports")
    after = {str(p.relative_to(tmp_path)): p.read_text() for p in tmp_path.rglob("*")
             if p.is_file() and p.parts[len(tmp_path.parts)] in outputs}
    assert after == before  # same files, same contents: nothing new, nothing half-written
