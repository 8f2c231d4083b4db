"""Every corrupt input names its path (or variable) and what was expected: labels in an npz,
a truncated metrics JSON, a bad $ADVHYBRID_THREADS, a corrupt training checkpoint."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from advhybrid.device import set_threads
from advhybrid.io import ContractError, load_checkpoint, load_json, load_npz, save_json, save_npz
from conftest import REPO, stage_args, synthetic_cifar


@pytest.mark.parametrize("labels, message", [
    (lambda y: y.astype(np.float32), r"'labels' must be one integer class index in 0\.\.9 per image, got a float32"),
    (lambda y: np.r_[y[:-1], 10], r"'labels' must be one integer class index in 0\.\.9 per image; 1 are not, e\.g\. \[10\]"),
    (lambda y: np.r_[y[:-1], -1], r"1 are not, e\.g\. \[-1\]"),
    (lambda y: y[:-1], r": 19 labels for 20 images"),
    (lambda y: y[:, None], r"got a int64 array of shape \(20, 1\)"),
])
def test_bad_labels_in_an_npz_are_named_with_the_file_on_load(tmp_path, labels, message):
    images, y = synthetic_cifar(2)
    path = tmp_path / "train.npz"
    save_npz(path, images=images, labels=labels(y))
    with pytest.raises(ContractError, match=rf"{path}: .*{message}"):
        load_npz(path, ["images", "labels"])


def test_train_targets_refuses_an_out_of_range_label_that_its_subset_would_skip(tmp_path):
    """One label 10 among 50 images; the stage's 20-image subset would not have drawn it."""
    data = tmp_path / "data"
    images, y = synthetic_cifar(5)
    save_npz(data / "train.npz", images=images, labels=np.r_[y[:-1], 10])
    save_npz(data / "test.npz", images=images, labels=y)
    targets = dict(models=["resnet56"], width=0.125, train_images=20, test_images=20, epochs=1, batch_size=10,
                   lr=0.001, weight_decay=0.0, restart_epochs=1, restart_mult=1, label_smoothing=0.0,
                   augment=False, seed=0, compile=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"targets": targets}))
    argv = [*stage_args("train_targets"), "--data", str(data)]  # dvc.yaml's paths, but this data folder
    proc = subprocess.run([sys.executable, str(REPO / "src" / "train_targets.py"), *argv],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"{data}/train.npz: 'labels' must be one integer class index in 0..9 per image; 1 are not" in proc.stderr
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("text, state", [("", "empty"), ('{"resnet50": {"test_acc": 0.5', "not valid JSON at line 1")])
def test_a_truncated_metrics_json_is_named_with_what_was_expected(tmp_path, text, state):
    path = tmp_path / "metrics" / "train.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(ContractError, match=rf"{path}: {state}.*; expected the metrics of train@resnet50"):
        load_json(path, "the metrics of train@resnet50")


def test_load_json_reads_what_save_json_wrote(tmp_path):
    save_json(tmp_path / "m.json", {"a": [1, 2.5]})
    assert load_json(tmp_path / "m.json") == {"a": [1, 2.5]}
    with pytest.raises(FileNotFoundError, match=r"no.json: no such file \(expected a JSON file"):
        load_json(tmp_path / "no.json")


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_a_bad_thread_count_names_the_variable_and_what_it_expects(monkeypatch, value):
    monkeypatch.setenv("ADVHYBRID_THREADS", value)
    with pytest.raises(ValueError, match=rf"\$ADVHYBRID_THREADS='{value}': expected a whole number of CPU threads >= 1"):
        set_threads()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated"])
def test_a_corrupt_training_checkpoint_is_named_with_what_to_do(tmp_path, content):
    path = tmp_path / "checkpoints" / "train" / "resnet50.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ContractError, match=rf"{path}: unreadable checkpoint .*delete it to start that run afresh"):
        load_checkpoint(path)


# --- model files ---------------------------------------------------------------------------------


def test_save_model_takes_the_build_arguments_from_the_model(tmp_path):
    from advhybrid.models import build_model, load_model, save_model

    model = build_model("shufflenetv2", 10, 0.125, seed=0)
    save_model(tmp_path / "a.pt", model, epochs=1)
    save_model(tmp_path / "b.pt", model, "shufflenetv2", 10, 0.125, epochs=1)  # the explicit form agrees
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    _, info = load_model(tmp_path / "a.pt")
    assert (info["name"], info["num_classes"], info["width"], info["meta"]) == ("shufflenetv2", 10, 0.125, {"epochs": 1})
    with pytest.raises(ValueError, match=r"c.pt: model was built with .*'width': 0.125.* saved as .*'width': 0.25"):
        save_model(tmp_path / "c.pt", model, width=0.25)


def test_one_error_type_for_bad_params_that_key_and_value_errors_both_catch():
    from advhybrid.attacks.ksearch import KGridError, k_grid
    from advhybrid.params import ParamsError

    with pytest.raises(ParamsError, match=r"adversarial.k_step=0"):
        k_grid(0.1, 1.0, 0.0)
    assert issubclass(KGridError, ParamsError)
    assert issubclass(ParamsError, KeyError) and issubclass(ParamsError, ValueError)
    assert str(ParamsError("params.yaml: 'a.b' must be int")) == "params.yaml: 'a.b' must be int"
