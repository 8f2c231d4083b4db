"""The few flat numbers `dvc exp show`, `dvc metrics show` and `dvc metrics diff` compare.

Each stage keeps its whole record (per-check results, per-class counts, per-draw statistics) as
a plain JSON output; this module folds those records into one small file per row of a table:
a target, a defended model, its clean control, a goal. Files of one kind share their keys, so
`dvc metrics show` prints one readable table with a row per file and a dozen columns.

Every value is a number: a figure that was not measured (a GAN with nothing to attack) is left
out rather than written as null, and a goal's `met` is 1 or 0.
"""
from __future__ import annotations

import statistics
from typing import Any

Records = dict[str, Any]
Summary = dict[str, dict[str, float]]  # relative path (no .json) -> {key: number}

HEADLINE_EPS = "8"  # the budget the verdict is decided at (evaluation/verdict.py)


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _hardest_mix(mixed: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The draw setting with the largest adversarial share (the paper's Table 5: 90/10)."""
    draws = {k: v for k, v in mixed.items() if k.startswith("real") and "_adv" in k}
    if not draws:
        return None
    key = max(draws, key=lambda k: int(k.split("_adv")[1]))
    return key, draws[key]


def targets(r: Records) -> Summary:
    """Per target: its clean CIFAR-10 test accuracy and the GAN's success on it at k = 1."""
    out = {}
    for name, t in r["targets"].items():
        gan = r.get("gan", {}).get(name, {})
        out[f"targets/{name}"] = _numbers({"acc": t["test_acc"], "gan_untargeted": gan.get("untargeted_success"),
                                          "gan_targeted": gan.get("targeted_success")})
    return out


def _study(r: Records, kind: str, name: str) -> dict[str, Any]:
    """White-box accuracy at the headline budget, the adaptive GAN's success, the seeds' spread."""
    rob = r.get("robustness", {}).get(f"{kind}/{name}", {})
    row = {f"pgd_{HEADLINE_EPS}": rob.get(f"pgd_{HEADLINE_EPS}")}
    if kind != "control":  # AutoAttack on the controls only repeats PGD's zero; columns are scarce
        row["pgd_autoattack"] = rob.get("pgd_autoattack")
    if kind == "defended":  # what the AEs add: the difference in differences against the control
        row["ae_did"] = (r.get("robustness_details", {}).get(f"defended/{name}", {})
                         .get("ae_effect", {}).get("did", {}).get("diff"))
    if kind == "fast_at":  # the reference defence: neither attacked by the GAN nor reseeded
        return row
    row["adaptive_gan"] = r.get("adaptive", {}).get(name, {}).get(kind, {}).get("k1_untargeted")
    runs = [s for s in r.get("seeds", []) if s.get("model") == name]
    if len(runs) > 1:  # seed 0 is the main run itself: the spread needs at least one more
        accs = [s[kind]["test_acc"] for s in runs]
        row |= {"seed_mean": statistics.fmean(accs), "seed_sd": statistics.stdev(accs)}
    return row


def defended(r: Records) -> Summary:
    """Per defended model: accuracy on the whole Hybrid test split, its real images and its AEs,
    the hardest mixed draw (Table 5), and the robustness study's headline figures."""
    out = {}
    for name, m in r["train"].items():
        row = {"acc": m["test_acc"], "real_acc": m["test_acc_real"], "ae_acc": m["test_acc_adv"]}
        mix = _hardest_mix(r.get("eval_mixed", {}).get("models", {}).get(name, {}))
        if mix:
            row["mixed_" + mix[0].removeprefix("real").replace("_adv", "_")] = mix[1]["accuracy"]["mean"]
        out[f"models/{name}"] = _numbers(row | _study(r, "defended", name))
    return out


def controls(r: Records) -> Summary:
    """The clean controls and the fast-AT reference: the rows the defended models are read against."""
    out = {}
    for name, m in r.get("control", {}).items():
        out[f"controls/{name}"] = _numbers({"acc": m["test_acc"], "ae_acc": m["test_acc_adv"]}
                                           | _study(r, "control", name))
    if "fast_at" in r:
        fa = r["fast_at"]
        key = next((k for k in r.get("robustness", {}) if k.startswith("fast_at/")), "fast_at/")
        out["controls/fast_at"] = _numbers({"acc": fa["test_acc"], "ae_acc": fa["test_acc_adv"]}
                                           | _study(r, "fast_at", key.split("/", 1)[1]))
    return out


def dataset(r: Records) -> Summary:
    """Hybrid split sizes (real + AE images) and the Great Expectations suite's counts."""
    splits, v = r["hybrid"]["splits"], r["validation"]
    return {"hybrid": {s: x["real"] + x["adversarial"] for s, x in splits.items()}
            | {"checks": v["n_checks"], "failed": v["n_failed"]}}


def goals(r: Records) -> Summary:
    """Per goal: the worst model's figure and whether the goal holds (1) or not (0)."""
    return {f"goals/{name}": _numbers({"worst": g["worst"], "met": int(bool(g["met"]))})
            for name, g in r.get("goals", {}).items()}


def summarize(r: Records) -> Summary:
    """Every flat metrics file, keyed by its path under metrics/summary/ (without .json)."""
    out: Summary = {}
    for part in (targets, defended, controls, dataset, goals):
        out |= part(r)
    return out
