"""Matplotlib figures that DVC's vega templates cannot draw (bars with intervals, image grids)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

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
        style = "-" if model.startswith("defended/") else "--" if model.startswith("control/") else ":"
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


def adversarial_examples(path: str | Path, examples: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                         n_examples: int) -> None:
    """plots/adversarial/examples.png. Rows: targets, each {name: (clean, adv, k)}; per example
    three panels: clean, perturbation (amplified), adversarial."""
    rows, cols = len(examples), 3 * n_examples
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.4 * rows), squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.01, top=1 - 0.25 / rows, wspace=0.08, hspace=0.3)
    for ax in axes.flat:
        ax.axis("off")
    for r, (name, (clean, adv, k)) in enumerate(examples.items()):
        axes[r, 0].text(-0.08, 0.5, name, rotation=90, ha="right", va="center", fontsize=8,
                        transform=axes[r, 0].transAxes)
        if len(adv) == 0:
            axes[r, 0].text(0, 0.5, "no successful adversarial example", va="center", fontsize=7,
                            transform=axes[r, 0].transAxes)
        for j in range(len(adv)):
            d = adv[j].astype(np.float32) - clean[j].astype(np.float32)
            amp = 0.5 + d / (2 * max(np.abs(d).max(), 1.0))  # stretched to the full range
            for c, (img, title) in enumerate([(clean[j], "clean"), (amp, f"k={k[j]:.2f} (amp.)"), (adv[j], "adv")]):
                axes[r, 3 * j + c].imshow(img)
                axes[r, 3 * j + c].set_title(title, fontsize=6)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
