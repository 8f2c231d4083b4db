"""One classifier trained for the Hybrid CIFAR-10 test split, and its Table 2 row.

Every model the robustness study compares (the defended models, their same-sources controls, the
adversarially trained reference, the extra seeds) is trained and tested the same way, here:
the recipe of the `train` params section, the Hybrid validation split to pick the epoch, the
whole Hybrid test split to score it, real and AEs apart.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from advhybrid.data.cifar import CLASSES
from advhybrid.evaluation.metrics import accuracy_by_kind, classification_metrics, confusion_rows
from advhybrid.io import save_csv, save_json
from advhybrid.models import build_model, count_parameters, save_model
from advhybrid.params import RECORD, RESUME, ParamsError, Section
from advhybrid.training import TrainConfig, fit, predict, saved_epoch
from advhybrid.training.trainer import CLEAN

SPLIT_KEYS = ["images", "labels", "is_adv"]
# the path options of the stages that train one of these classifiers (params.stage_parser):
# its outputs, and the resume file DVC must not treat as one
HYBRID = "Hybrid CIFAR-10 folder: {train,val,test}.npz"
CONTROL = {"hybrid": HYBRID}  # the same-sources control reads the Hybrid splits alone (data/control.py)
RUN_PATHS = {"weights": "output: the trained model (.pt)", "metrics": RECORD,
               "plots": "output plot: the training curve (CSV)", "checkpoint": RESUME}


def recipe(train: Section, name: str, key: str) -> tuple[TrainConfig, float]:
    """The `train` section's recipe for `name` (its epochs and width), refusing a name that
    train.models lacks: every model of the study is trained exactly as its defended twin."""
    if name not in train["models"]:
        raise ParamsError(f"{train.source}: {key} {name!r} must be one of train.models {list(train['models'])}")
    return TrainConfig.from_section(train, epochs=train.per_model("epochs", name, int)), train.per_model("width", name, float)


def train_and_test(
    name: str, width: float, cfg: TrainConfig, train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray], test: dict[str, np.ndarray], device: torch.device,
    checkpoint: str | Path, perturb: Callable | None = None, key_extra: dict | None = None,
    select_by: Sequence[str] = CLEAN, monitor: Callable | None = None,
) -> tuple[torch.nn.Module, dict[str, Any], list[dict], np.ndarray]:
    """Train `name` at `width` with `cfg`; return (model, Table 2 metrics, history, test predictions).
    `select_by` and `monitor` go to `fit`: the columns that choose the kept epoch, and what adds them."""
    t0 = time.perf_counter()
    model = build_model(name, num_classes=10, width=width, seed=cfg.seed)
    model, history = fit(model, train, val, cfg, device, checkpoint=checkpoint, name=name,
                         perturb=perturb, key_extra=key_extra, select_by=select_by, monitor=monitor)
    pred = predict(model, test["images"], device).argmax(1).numpy()
    scores = classification_metrics(test["labels"], pred)
    by_kind = accuracy_by_kind(test["labels"], pred, test["is_adv"])
    best = saved_epoch(history, select_by=select_by)  # Table 2 describes the saved weights, not the last epoch
    metrics = {
        "epochs": len(history), "best_epoch": best["epoch"], "loss": best["train_loss"],
        "train_acc": best["train_acc"], "val_acc": best["val_acc"], "test_acc": scores["accuracy"],
        "precision": scores["precision"], "recall": scores["recall"],
        "test_acc_real": by_kind["acc_real"], "test_acc_adv": by_kind["acc_adv"],
        "train_images": int(len(train[0])), "params": count_parameters(model),
        "minutes": round((time.perf_counter() - t0) / 60, 2),
    }
    return model, metrics, history, pred


def write_outputs(model: torch.nn.Module, name: str, width: float, metrics: dict, history: list[dict],
                  test_labels: np.ndarray, pred: np.ndarray, model_path: str | Path, metrics_path: str | Path,
                  curve_path: str | Path, confusion_path: str | Path | None = None) -> None:
    save_model(model_path, model, name, 10, width, best_epoch=metrics["best_epoch"])
    save_json(metrics_path, metrics)
    save_csv(curve_path, history)
    if confusion_path:
        save_csv(confusion_path, confusion_rows(test_labels, pred, list(CLASSES)))
    print(f"{Path(model_path).stem}: Hybrid test accuracy {metrics['test_acc']:.4f} "
          f"(real {metrics['test_acc_real']:.4f}, adversarial {metrics['test_acc_adv']:.4f})")
