"""The params schema (advhybrid.schema) and the check_params stage that runs it before any other.

Every scale's composed params.yaml is valid; each bad input a careless `-S` or scale-file edit
can give fails with the dotted key and what was expected; and the check_params script writes
nothing on a bad file, so the stages after it (which DVC has not touched yet) keep their outputs.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from advhybrid.params import ParamsError
from advhybrid.schema import Params, validate_params
from conftest import REPO

SCALES = ["smoke", "reference", "paper"]


def compose(root: Path, conf: Path, overrides: list[str]) -> dict:
    """params.yaml as `dvc exp run -S ...` composes it (DVC's own Hydra call)."""
    from dvc.utils.hydra import compose_and_dump

    out = root / "params.yaml"
    compose_and_dump(out, str(conf.resolve()), None, "config", str(root.resolve()), overrides)
    return yaml.safe_load(out.read_text())


@pytest.fixture(scope="module")
def smoke_params(tmp_path_factory) -> dict:
    return compose(tmp_path_factory.mktemp("compose"), REPO / "conf", ["scale=smoke", "data.source=official"])


def with_value(doc: dict, key: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = key.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


class _Delete:
    """Marks a key to remove; a fixed repr keeps the test ids the same in every process (xdist)."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()


@pytest.mark.parametrize("scale", SCALES)
def test_every_scale_composes_to_valid_params(tmp_path, scale):
    doc = compose(tmp_path, REPO / "conf", [f"scale={scale}", "data.source=official"])
    assert isinstance(validate_params(doc), Params)


# (key, bad value, what the error must say): each of these used to reach a stage, and DVC had
# removed that stage's outputs before the stage noticed (or never noticed at all).
BAD = [
    ("train.lr", "abc", r"'train.lr'='abc': Input should be a valid number"),
    ("train.lr", 0.0, r"'train.lr'=0.0: Input should be greater than 0"),
    ("train.epochs", {"resnet50": -1, "vgg19bn": 1, "shufflenetv2": 1, "repvgg_a2": 1}, r"'train.epochs' must be >= 1, got \{'resnet50': -1"),
    ("train.epochs", 3, r"'train.epochs' must be a \{model: epochs\} mapping \(each train@<model> stage"),
    ("train.epochs", {"resnet50": 1}, r"'train.epochs' is a per-model mapping without \['vgg19bn'"),
    ("train.width", {"resnet50": 0.125, "vgg19bn": 0.125, "shufflenetv2": 0.125, "repvgg_a2": 0.125, "resnet5O": 1.0},
     r"key 'resnet5O' of 'train.width'"),
    ("train.models", [], r"'train.models'=\[\]: List should have at least 1 item"),
    ("train.models", ["resnet50", "resnet50"], r"'train.models' must not repeat a name"),
    ("targets.models", ["resnet56", "nosuchnet"], r"'targets.models.1'='nosuchnet': Input should be 'resnet50', "),
    ("targets.augment", 1, r"'targets.augment'=1: Input should be a valid boolean"),
    ("targets.epochs", 2.5, r"'targets.epochs'=2.5: Input should be a valid integer"),
    ("targets.label_smoothing", 1.0, r"'targets.label_smoothing'=1.0: Input should be less than 1"),
    ("data.source", "../shared/data/cifar10-jpge.tar.gz", r"'data.source'='../shared/data/cifar10-jpge.tar.gz' does not exist"),
    ("gan.output", "sigmoid", r"'gan.output'='sigmoid': Input should be 'tanh' or 'hardtanh'"),
    ("gan.targets", ["resnet50"], r"'gan.targets' names \['resnet50'\], which 'targets.models'"),
    ("adversarial.k_step", 0.0, r"'adversarial.k_min'=0.1, 'k_max'=1.0, 'k_step'=0.0: expected"),
    ("hybrid.train_cap_per_class", {"airplane": 10}, r"'hybrid.train_cap_per_class' must name every class"),
    ("eval_mixed.adv_fractions", [0.03, 1.5], r"'eval_mixed.adv_fractions' must be fractions in \[0, 1\]"),
    ("eval_mixed.draws", 0, r"'eval_mixed.draws'=0: Input should be greater than or equal to 1"),
    ("eval_mixed.models", ["resnet56"], r"'eval_mixed.models' names \['resnet56'\], which 'train.models'"),
    ("robustness.fast_at_model", "vgg19bn", r"'robustness.fast_at_model'='vgg19bn' must be 'fast_at.model'"),
    ("robustness.autoattack.target_classes", 3, r"'robustness.autoattack.target_classes'=3: Input should be 9"),
    ("robustness.autoattack.eps_255", 6.0, r"'robustness.autoattack.eps_255'=6 must be one of 'robustness.eps_255'"),
    ("seeds.extra", [1, 1], r"'seeds.extra' must not repeat a name"),
    ("report.goals", {"target_clean_acc": 0.8, "gan_sucess": 0.5}, r"key 'gan_sucess' of 'report.goals'"),
    ("report.goals", {"target_clean_acc": 80}, r"fractions must be in \[0, 1\]"),
    ("train.label_smoothing", DELETE, r"missing key 'train.label_smoothing'"),
]


@pytest.mark.parametrize("key, value, message", BAD, ids=[f"{k}={v!r}"[:60] for k, v, _ in BAD])
def test_a_bad_value_is_rejected_naming_the_key_and_what_was_expected(smoke_params, key, value, message):
    with pytest.raises(ParamsError, match=message):
        validate_params(with_value(smoke_params, key, value))


def test_an_unknown_key_is_rejected_naming_the_allowed_keys(smoke_params):
    doc = with_value(smoke_params, "train.label_smothing", 0.1)
    with pytest.raises(ParamsError, match=r"unknown key 'train.label_smothing' \(allowed: augment, batch_size, "
                                          r"compile, epochs, label_smoothing, lr, models, "):
        validate_params(doc)


def test_an_unknown_section_is_rejected(smoke_params):
    with pytest.raises(ParamsError, match=r"unknown key 'trian' \(allowed: adaptive, adversarial, data, "):
        validate_params({**smoke_params, "trian": {"lr": 1}})


def test_every_problem_is_reported_at_once(smoke_params):
    doc = with_value(with_value(smoke_params, "train.lr", "abc"), "gan.epochs", 0)
    with pytest.raises(ParamsError) as e:
        validate_params(doc)
    assert "'train.lr'" in str(e.value) and "'gan.epochs'" in str(e.value)


def test_a_typo_in_a_scale_file_fails_instead_of_being_ignored(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    smoke = conf / "scale" / "smoke.yaml"
    smoke.write_text(smoke.read_text().replace("  restart_epochs: 2\n", "  restart_epochs: 2\n  label_smothing: 0.1\n", 1))
    doc = compose(tmp_path, conf, ["scale=smoke", "data.source=official"])
    assert doc["targets"]["label_smothing"] == 0.1  # Hydra merges it without a word
    with pytest.raises(ParamsError, match=r"unknown key 'targets.label_smothing' \(allowed: .*label_smoothing"):
        validate_params(doc)


def test_a_scale_that_leaves_a_size_unset_fails_naming_it(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "scale" / "bare.yaml").write_text("# @package _global_\nscale_info: {name: bare, description: none}\n")
    doc = compose(tmp_path, conf, ["scale=bare", "data.source=official"])
    with pytest.raises(ParamsError, match=r"'targets.width' is not set: conf/config.yaml leaves it \(\?\?\?\) to each"):
        validate_params(doc)


def test_the_cifar_source_environment_override_makes_data_source_unchecked(smoke_params, monkeypatch):
    monkeypatch.setenv("ADVHYBRID_CIFAR_SOURCE", "/somewhere/else")
    validate_params(with_value(smoke_params, "data.source", "no/such/archive.tar.gz"))


# --- the check_params stage ----------------------------------------------------------------


def check_params(tmp_path: Path, doc: dict) -> str | None:
    """The stage's main, in-process (its script is a thin wrapper): None, or its exit message."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_params", REPO / "src" / "check_params.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        stage.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "checks" / "params.json")])
    except SystemExit as e:
        return str(e.code)
    return None


def test_check_params_writes_its_marker_only_for_valid_params(tmp_path, smoke_params):
    assert check_params(tmp_path, smoke_params) is None
    marker = tmp_path / "checks" / "params.json"
    first = marker.read_bytes()
    assert json.loads(first)["params"] == "params.yaml"

    failure = check_params(tmp_path, with_value(smoke_params, "train.epochs.resnet50", -1))
    assert failure and "'train.epochs' must be >= 1, got {'resnet50': -1" in failure
    assert marker.read_bytes() == first and sorted(p.name for p in marker.parent.iterdir()) == ["params.json"]

    # a valid change elsewhere gives the same bytes: no stage reruns because of the marker
    assert check_params(tmp_path, with_value(smoke_params, "train.lr", 0.5)) is None
    assert marker.read_bytes() == first


def test_every_stage_runs_after_check_params_and_the_check_keeps_its_output():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    check = stages.pop("check_params")
    assert check["params"] == [{"params.yaml": None}], "check_params must read all of params.yaml"
    (out,) = check["outs"]
    assert out == {"checks/params.json": {"cache": False, "persist": True}}
    for name, st in stages.items():
        deps = st.get("do", st)["deps"]
        assert "checks/params.json" in deps, f"stage {name} does not wait for check_params"


def test_each_trained_model_depends_on_its_own_epochs_and_the_whole_shared_recipe():
    """train.models only names the foreach items; every other key of the recipe is a param of
    each stage that trains with it, and its epochs only through the model's own entry."""
    from advhybrid.schema import TrainParams

    recipe = {f"train.{k}" for k in TrainParams.model_fields} - {"train.models", "train.epochs"}
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, model in (("train", "${item}"), ("control", "${item}"), ("train_fast_at", "${fast_at.model}"),
                        ("seed", "${seeds.model}")):
        params = set(stages[name].get("do", stages[name])["params"])
        assert f"train.epochs.{model}" in params and recipe <= params, (name, sorted(recipe - params))
        assert not {"train", "train.epochs"} & params, f"{name} reruns whenever any model's epochs change"


def test_a_missing_source_names_both_fixes(smoke_params):
    with pytest.raises(ParamsError) as err:
        validate_params(with_value(smoke_params, "data.source", "no/such/cifar.tar.gz"))
    message = str(err.value)
    assert "-S data.source=official" in message and "ADVHYBRID_CIFAR_SOURCE" in message
