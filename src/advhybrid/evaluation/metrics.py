"""Accuracy, precision and recall as the paper defines them (IV-A), computed by scikit-learn."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, precision_score, recall_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-averaged precision and recall over the ten classes."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("no samples to score")
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def accuracy_by_kind(y_true: np.ndarray, y_pred: np.ndarray, is_adv: np.ndarray) -> dict[str, float]:
    """Accuracy on real and on adversarial images apart (Tables 3 to 5 report them so)."""
    y_true, y_pred, is_adv = np.asarray(y_true), np.asarray(y_pred), np.asarray(is_adv).astype(bool)
    out = {}
    for kind, mask in (("real", ~is_adv), ("adv", is_adv)):
        out[f"acc_{kind}"] = float((y_true[mask] == y_pred[mask]).mean()) if mask.any() else float("nan")
    return out


def interval(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean and the central `level` percentile interval of repeated draws."""
    v = np.asarray(values, dtype=float)
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return {"mean": float(v.mean()), "low": float(lo), "high": float(hi)}


def confusion_rows(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> list[dict]:
    """One row per image, the shape DVC's `confusion` plot template reads."""
    return [{"actual": classes[t], "predicted": classes[p]} for t, p in zip(y_true, y_pred)]
