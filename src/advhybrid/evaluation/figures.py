"""Matplotlib figures that DVC's vega templates cannot draw (bars with intervals)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402

from ..io import atomic_path  # noqa: E402


def interval_bars(rows: list[dict], title: str, path: str | Path) -> None:
    """Grouped bars (one group per model, one bar per kind) with their 95% intervals."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(models), 3.2))
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        sel = {r["model"]: r for r in rows if r["kind"] == kind}
        xs = [i + j * width for i in range(len(models))]
        means = [100 * sel[m]["mean"] for m in models]
        err = [[100 * (sel[m]["mean"] - sel[m]["low"]) for m in models],
               [100 * (sel[m]["high"] - sel[m]["mean"]) for m in models]]
        err = [[max(0.0, e) for e in side] for side in err]  # a mean can sit a rounding error outside its interval
        ax.bar(xs, means, width, yerr=err, capsize=3, label=kind)
    ax.set_xticks([i + width * (len(kinds) - 1) / 2 for i in range(len(models))], models)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def accuracy_vs_eps(path: str | Path, rows: list[dict], title: str) -> None:
    """One line per model: robust accuracy against the L-inf budget (rows: model, eps_255, accuracy)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for model in dict.fromkeys(r["model"] for r in rows):
        pts = sorted((r["eps_255"], 100 * r["accuracy"]) for r in rows if r["model"] == model)
        style = "-" if model.startswith("defended/") else "--" if model.startswith("baseline/") else ":"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=3, label=model)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("L-inf budget (x/255)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
