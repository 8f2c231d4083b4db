"""Our tables beside the paper's (Tables 1 to 5), as Markdown.

The PAPER_* numbers are copied from the paper (Truong Phi Ho et al., 2024) and are printed
marked as the paper's; every other number comes from the metrics files the pipeline wrote.
"""
from __future__ import annotations

from typing import Any

from . import effect, verdict
from .goals import COUNT_GOALS

# Table 2: epochs, loss, train acc, test acc, precision, recall (percent).
PAPER_TABLE2 = {
    "vgg19bn": (53, 0.030, 99.41, 93.8, 95.3, 94.0),
    "shufflenetv2": (99, 0.004, 99.88, 95.9, 95.9, 96.0),
    "repvgg_a2": (99, 0.004, 99.88, 95.1, 95.1, 95.2),
    "resnet50": (99, 0.004, 99.94, 95.3, 95.3, 95.4),
}
# Tables 3, 4, 5: (real, AEs) accuracy in percent, one 1,000-image draw each.
PAPER_MIXED = {
    0.03: {"vgg19bn": (94.38, 89.33), "shufflenetv2": (95.90, 92.67), "repvgg_a2": (95.09, 94.33), "resnet50": (95.28, 94.00)},
    0.05: {"vgg19bn": (93.81, 89.33), "shufflenetv2": (95.90, 92.00), "repvgg_a2": (95.09, 94.80), "resnet50": (95.28, 93.20)},
    0.10: {"vgg19bn": (94.94, 91.30), "shufflenetv2": (95.83, 91.70), "repvgg_a2": (95.17, 94.40), "resnet50": (96.40, 92.80)},
}
# Section II-D: clean CIFAR-10 accuracy the paper quotes for the target architectures.
PAPER_TARGETS = {"vgg19bn": 91.91, "shufflenetv2": 93.81, "repvgg_a2": 94.98}
# Table 1: real training images per class (AEs: the same number); val and test 500 + 500.
PAPER_TABLE1_TRAIN = {
    "airplane": 2000, "automobile": 1669, "bird": 2028, "cat": 2019, "deer": 2200,
    "dog": 2031, "frog": 2081, "horse": 2257, "ship": 2032, "truck": 2439,
}
PAPER_NAMES = {"vgg19bn": "VGG19_bn", "shufflenetv2": "ShuffleNetV2", "repvgg_a2": "RepVGG_a2", "resnet50": "ResNet-50"}


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.{digits}f}"


def ratio_key(f: float) -> str:
    return f"real{round(100 * (1 - f))}_adv{round(100 * f)}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _paper_for_goal(name: str) -> str:
    if name == "target_clean_acc":
        return ", ".join(f"{PAPER_NAMES[n]} {v}" for n, v in PAPER_TARGETS.items()) + " (II-D)"
    if name == "defended_hybrid_acc":
        return ", ".join(f"{PAPER_NAMES[n]} {v[3]}" for n, v in PAPER_TABLE2.items()) + " (Table 2)"
    if name == "hybrid_train_pairs_per_class":
        lo, hi = (f(PAPER_TABLE1_TRAIN, key=PAPER_TABLE1_TRAIN.get) for f in (min, max))
        return f"{PAPER_TABLE1_TRAIN[lo]:,} ({lo}) to {PAPER_TABLE1_TRAIN[hi]:,} ({hi}) (Table 1)"
    return "— (the paper gives no success rate)"


def goals_section(goals: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for name, g in goals.items():
        fmt = (lambda v, _d=1: f"{v:,}" if v is not None else "—") if name in COUNT_GOALS else pct  # noqa: E731
        ours = ", ".join(f"{PAPER_NAMES.get(n, n)} {fmt(v, 1)}" for n, v in g["by_model"].items())
        if "real" in g:
            ours += " (real / AEs: " + ", ".join(
                f"{pct(g['real'][n], 1)} / {pct(g['adversarial'][n], 1)}" for n in g["by_model"]) + ")"
        rows.append([name, f"≥ {fmt(int(g['goal']) if name in COUNT_GOALS else g['goal'], 0)}",
                     "met" if g["met"] else "**missed**",
                     f"{fmt(g['worst'], 1)} ({g['worst_model']})", ours, _paper_for_goal(name)])
    return ["## Goals for this scale (reports/goals.json)", "",
            "Each goal holds for the worst model, not the mean; GAN success is over the test images "
            "the target classifies correctly, at k = 1 (L∞ ≤ 8/255).", "",
            _table(["goal", "target", "status", "worst (model)", "ours, per model (%)", "paper (%)"], rows), ""]


def header(params: dict[str, Any], command: str) -> list[str]:
    return ["# Results: Hybrid CIFAR-10, ours beside the paper's", "",
            f"Produced by `{command}` (scale `{params.get('scale_info', {}).get('name', '?')}`: "
            f"{params.get('scale_info', {}).get('description', '')}). "
            "Columns marked *paper* are copied from Truong Phi Ho et al. (2024); all others are measured "
            "by this pipeline. Regenerate with `dvc repro report`.", ""]


def defence_section(m: dict[str, Any]) -> list[str]:
    if m.get("robustness_details"):
        seeds = m.get("seeds", [])
        return verdict.section(m["robustness_details"], m.get("adaptive", {}), seeds,
                               effect.seed_effect(seeds) if len(seeds) > 1 else None)
    return ["## Does the defence hold?", "",
            "Not in this state: the robustness study's stages have not run "
            "(`dvc repro eval_robustness adaptive_attack report`).", ""]


def targets_section(t: dict[str, Any]) -> list[str]:
    return ["## Target models (clean CIFAR-10 test accuracy, %)", "",
            _table(["target", "ours", "paper (II-D)", "gap"], [
                [n, pct(v["test_acc"]), PAPER_TARGETS.get(n, "—"),
                 f"{100 * v['test_acc'] - PAPER_TARGETS[n]:+.2f}" if n in PAPER_TARGETS else "—"]
                for n, v in t.items()]), ""]


def _numeric_table(per_target: dict[str, dict[str, Any]]) -> str:
    first = next(iter(per_target.values()))
    keys = [k for k in first if isinstance(first[k], (int, float))]
    return _table(["target"] + keys, [[n] + [_num(v[k]) for k in keys] for n, v in per_target.items()])


def attack_section(adv: dict[str, Any], gan: dict[str, Any]) -> list[str]:
    out = []
    if adv:
        out += ["## The GAN attack (generate_adversarial)", "", _numeric_table(adv), ""]
    if gan:
        out += ["GAN at the default k (held-out clean test images, metrics/gan.json):", "", _numeric_table(gan), ""]
    return out


def table1_section(hy: dict[str, Any]) -> list[str]:
    if not hy:
        return []
    splits = hy.get("splits", {})
    paper_total = f"{sum(PAPER_TABLE1_TRAIN.values()):,}"
    rows = [[c] + [f"{splits[s]['per_class'][c]['real']:,} / {splits[s]['per_class'][c]['adversarial']:,}"
                   for s in splits] + [f"{PAPER_TABLE1_TRAIN[c]:,} / {PAPER_TABLE1_TRAIN[c]:,}", "500 / 500", "500 / 500"]
            for c in PAPER_TABLE1_TRAIN if all(c in splits[s].get("per_class", {}) for s in splits)]
    rows.append(["total"] + [f"{splits[s]['real']:,} / {splits[s]['adversarial']:,}" for s in splits]
                + [f"{paper_total} / {paper_total}", "5,000 / 5,000", "5,000 / 5,000"])
    return ["## Table 1: the Hybrid CIFAR-10 splits (real / AEs)", "",
            "Ours: pairs of a real image and one AE made from it, grouped by source image.", "",
            _table(["class"] + [f"{s} (ours)" for s in splits] + ["train (paper)", "val (paper)", "test (paper)"], rows), "",
            f"Pool: {hy.get('pool', {})}.", "",
            f"Paper: training {paper_total} real + {paper_total} AEs (per class "
            + ", ".join(f"{c} {n:,}" for c, n in PAPER_TABLE1_TRAIN.items())
            + "); validation and testing 500 real + 500 AEs per class.", ""]


def validation_section(val: dict[str, Any]) -> list[str]:
    if not val:
        return []
    checks = list(val.get("checks", {}).values())  # {check name: record}: count the records, not the keys
    failed = [c for c in checks if not c.get("success", True)]
    return [f"Great Expectations validation: {len(checks)} checks, {len(failed)} failed "
            "(metrics/validation.json, reports/validation/).", ""]


def table2_section(tr: dict[str, Any]) -> list[str]:
    return ["## Table 2: training the defended models on Hybrid CIFAR-10", "",
            _table(["model", "epochs", "loss", "train acc", "test acc", "precision", "recall",
                    "test acc real", "test acc AEs", "paper: epochs, loss, train, test, precision, recall"],
                   [[PAPER_NAMES.get(n, n), v["epochs"], f"{v['loss']:.4f}", pct(v["train_acc"]), pct(v["test_acc"]),
                     pct(v["precision"]), pct(v["recall"]), pct(v["test_acc_real"]), pct(v["test_acc_adv"]),
                     ", ".join(str(x) for x in PAPER_TABLE2.get(n, ())) or "—"] for n, v in tr.items()]), ""]


def _mixed_row(n: str, at: dict[str, Any], paper: tuple) -> list[str]:
    r, a = at["acc_real"], at["acc_adv"]
    return [PAPER_NAMES.get(n, n),
            f"{pct(r['mean'])} [{pct(r['low'])}, {pct(r['high'])}]",
            f"{pct(a['mean'])} [{pct(a['low'])}, {pct(a['high'])}]",
            paper[0], paper[1],
            f"{100 * r['mean'] - paper[0]:+.2f} / {100 * a['mean'] - paper[1]:+.2f}" if paper[0] != "—" else "—"]


def mixed_sections(em: dict[str, Any]) -> list[str]:
    """Tables 3 to 5: the real/AE mixes, one table per adversarial share."""
    out = []
    for i, f in enumerate(sorted(PAPER_MIXED), start=3):
        key = ratio_key(f)
        rows = [_mixed_row(n, v[key], PAPER_MIXED[f].get(n, ("—", "—")))
                for n, v in em.get("models", {}).items() if key in v]
        if rows:
            out += [f"## Table {i}: {round(100 * (1 - f))}% real, {round(100 * f)}% AEs "
                    f"({em.get('n_images')} images, mean [95% interval] over {em.get('draws')} draws)", "",
                    _table(["model", "real (ours)", "AEs (ours)", "real (paper)", "AEs (paper)", "gap real / AEs"], rows), ""]
    return out


def whole_test_section(em: dict[str, Any]) -> list[str]:
    return ["## Whole Hybrid test split", "",
            _table(["model", "accuracy", "precision", "recall", "real", "AEs"],
                   [[PAPER_NAMES.get(n, n)] + [pct(v["whole_test"][k]) for k in ("accuracy", "precision", "recall", "acc_real", "acc_adv")]
                    for n, v in em.get("models", {}).items()]), ""]


def provenance_section(params: dict[str, Any], hashes: dict[str, str]) -> list[str]:
    return ["## Provenance", "", "Data (md5, as DVC records it):", "",
            _table(["file", "md5"], [[k, v] for k, v in hashes.items()]), "",
            "Params (params.yaml as composed for this run):", "", "```json", _short_json(params), "```", ""]


def render(m: dict[str, Any], params: dict[str, Any], hashes: dict[str, str], command: str,
           goals: dict[str, dict[str, Any]] | None = None) -> str:
    """reports/results.md: `m` holds the stages' records (evaluation.records.load_records), `goals`
    what `evaluation.goals.check_goals` made of them. One section per table, in reading order."""
    out = header(params, command) + defence_section(m) + (goals_section(goals) if goals else [])
    out += targets_section(m.get("targets", {})) + attack_section(m.get("adversarial", {}), m.get("gan", {}))
    out += table1_section(m.get("hybrid", {})) + validation_section(m.get("validation", {}))
    out += table2_section(m.get("train", {}))
    em = m.get("eval_mixed", {})
    out += mixed_sections(em) + whole_test_section(em) + provenance_section(params, hashes)
    return "\n".join(out)


def _num(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _short_json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, sort_keys=False)
