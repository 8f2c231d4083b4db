"""The flat metrics DVC compares (issue 18): few, numeric, one file a row, read from the records."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from advhybrid.evaluation.goals import check_goals
from advhybrid.evaluation.records import load_records, read_json
from advhybrid.evaluation.summary import summarize
from advhybrid.io import ContractError
from conftest import stage_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import show  # noqa: E402

MODELS = ["resnet50", "vgg19bn"]


def records() -> dict:
    mix = {"accuracy": {"mean": 0.7, "low": 0.6, "high": 0.8}}
    trained = dict(test_acc=0.6, test_acc_real=0.62, test_acc_adv=0.58)
    r = {
        "targets": {"resnet56": {"test_acc": 0.71}, "vgg19bn": {"test_acc": 0.68}},
        "gan": {"resnet56": {"untargeted_success": 0.7, "targeted_success": 0.6},
                "vgg19bn": {"untargeted_success": None, "targeted_success": None}},
        "hybrid": {"splits": {s: {"real": n, "adversarial": n, "per_class": {"cat": {"real": n}}}
                              for s, n in (("train", 100), ("val", 10), ("test", 20))}},
        "validation": {"n_checks": 24, "n_failed": 1, "checks": {}},
        "train": {m: dict(trained) for m in MODELS},
        "eval_mixed": {"models": {m: {"whole_test": {}, "real97_adv3": mix, "real90_adv10": mix} for m in MODELS}},
        "control": {m: dict(trained, test_acc=0.55) for m in MODELS},
        "fast_at": dict(trained, test_acc=0.35),
        "robustness": {f"{k}/{m}": {"pgd_8": 0.0, "pgd_autoattack": 0.0, "pgd_1": 0.2}
                       for k in ("defended", "control") for m in MODELS} | {"fast_at/resnet50": {"pgd_8": 0.2, "pgd_autoattack": 0.19}},
        "robustness_details": {f"defended/{m}": {"ae_effect": {"did": {"diff": 0.004, "low": -0.01, "high": 0.02}}}
                               for m in MODELS},
        "adaptive": {"resnet50": {"defended": {"k1_untargeted": 0.4}, "control": {"k1_untargeted": 0.37}}},
        "seeds": [{"model": "resnet50", "defended": {"test_acc": a}, "control": {"test_acc": b}}
                  for a, b in ((0.6, 0.57), (0.58, 0.53), (0.56, 0.52))],
    }
    r["goals"] = check_goals(r, {"target_clean_acc": 0.8, "gan_untargeted": 0.85})
    return r


def test_every_figure_is_a_number_and_unmeasured_ones_are_left_out():
    rows = summarize(records())
    values = [v for row in rows.values() for v in row.values()]
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    assert rows["targets/vgg19bn"] == {"acc": 0.68}  # nothing attacked: no GAN figure, not a null
    assert rows["goals/gan_untargeted"] == {"met": 0}  # the worst target was not measured: a miss, no figure
    assert rows["goals/target_clean_acc"]["met"] == 0


def test_one_file_a_row_with_keys_shared_by_its_kind():
    rows = summarize(records())
    assert set(rows["models/resnet50"]) >= {"acc", "real_acc", "ae_acc", "mixed_90_10", "pgd_8", "pgd_autoattack", "ae_did"}
    assert set(rows["models/vgg19bn"]) == set(rows["models/resnet50"]) - {"adaptive_gan", "seed_mean", "seed_sd"}
    assert rows["controls/fast_at"] == {"acc": 0.35, "ae_acc": 0.58, "pgd_8": 0.2, "pgd_autoattack": 0.19}
    assert rows["models/vgg19bn"]["ae_did"] == 0.004 and "ae_did" not in rows["controls/vgg19bn"]
    assert rows["hybrid"] == {"train": 200, "val": 20, "test": 40, "checks": 24, "failed": 1}


def test_seed_spread_is_a_mean_and_sd_whatever_the_number_of_seeds():
    rows = summarize(records())
    assert rows["models/resnet50"]["seed_mean"] == pytest.approx(0.58)
    assert rows["models/resnet50"]["seed_sd"] == pytest.approx(0.02)
    assert rows["controls/resnet50"]["seed_mean"] == pytest.approx(0.54)


def record_paths(root: Path) -> dict[str, Path]:
    """summarize's options from dvc.yaml (`--eval-mixed metrics/eval_mixed.json`...), under `root`."""
    args = stage_args("summarize")
    return {opt[2:].replace("-", "_"): root / value for opt, value in zip(args[::2], args[1::2])}


def test_a_truncated_record_is_named_not_read_as_empty(tmp_path):
    (tmp_path / "metrics").mkdir()
    for name in ("targets", "gan", "adversarial", "hybrid", "validation"):
        (tmp_path / f"metrics/{name}.json").write_text("{}")
    (tmp_path / "metrics/eval_mixed.json").write_text('{"models": {"resnet50": ')
    with pytest.raises(ContractError, match=r"metrics/eval_mixed.json: not valid JSON"):
        load_records(record_paths(tmp_path), ["resnet50"], "resnet50", [])
    with pytest.raises(FileNotFoundError, match=r"metrics/nothing.json: no such file"):
        read_json(tmp_path / "metrics/nothing.json")


def show_json(*exps: tuple[str, float, float]) -> list[dict]:
    def data(lr: float, acc: float) -> dict:
        return {"params": {"params.yaml": {"data": {"train": {"lr": lr, "epochs": 5, "models": ["a"]}}}},
                "metrics": {"metrics/summary/models/resnet50.json": {"data": {"acc": acc, "pgd_8": 0.0}}},
                "deps": {"src/x.py": {"hash": "abc"}}}
    base, *rest = exps
    return [{"rev": "workspace", "name": None, "data": data(*base[1:])},
            {"rev": "a" * 40, "name": "main", "data": data(*base[1:]),
             "experiments": [{"name": n, "revs": [{"rev": "b" * 40, "name": None, "data": data(lr, acc)}]}
                            for n, lr, acc in rest]}]


def test_show_prints_only_what_differs_with_short_headers():
    text = "\n".join(show.tables(show.experiments(show_json(("x", 0.1, 0.6), ("lr-x2", 0.2, 0.5))), True, 200))
    assert "train.lr" in text and "models/resnet50:acc" in text and "lr-x2" in text and "workspace" in text
    assert "train.epochs" not in text and "pgd_8" not in text and "src/x.py" not in text


def test_show_splits_a_wide_table_to_fit_the_terminal():
    rows = [(f"exp{i}", {f"models/m{j}:acc": i * 0.1 + j for j in range(30)}) for i in range(3)]
    lines = show.tables(rows, True, 80)
    assert max(map(len, lines)) <= 80
    assert sum(line.startswith("Experiment") for line in lines) > 1
    assert all(f"models/m{j}:acc" in "\n".join(lines) for j in range(30))
