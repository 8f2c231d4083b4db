"""The report's first section, "Does the defence hold?": one table and plain sentences, every
number read from the robustness study's outputs, every accuracy with its Wilson 95% interval.

The verdict rule is fixed here, before any number is seen: the Hybrid defence holds under
white-box attack for a model when its PGD accuracy at 8/255 is above its clean control's with
non-overlapping 95% intervals; otherwise it does not, whatever it does on the transferred AEs.
"""
from __future__ import annotations

import statistics
from typing import Any

NAMES = {"vgg19bn": "VGG19_bn", "shufflenetv2": "ShuffleNetV2", "repvgg_a2": "RepVGG_a2", "resnet50": "ResNet-50"}


def _ci(a: dict[str, float]) -> str:
    return f"{100 * a['acc']:.1f} [{100 * a['low']:.1f}, {100 * a['high']:.1f}]"


def _pct(v: float | None) -> str:
    """A rate in %, or a dash where nothing was measured (no image to attack: None)."""
    return "—" if v is None else f"{100 * v:.1f}"


def _p(p: float) -> str:
    """`p = 0.03`, or `p < 1e-4` where the exact test's p-value underflows the printed digits."""
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def _holds(d: dict, b: dict) -> bool:
    return d["low"] > b["high"]


def verdicts(details: dict[str, Any]) -> dict[str, str]:
    """Per defended model with a clean control and PGD at 8/255 on both: "holds" or "does not hold"."""
    out = {}
    for key, d in details.items():
        name = key.split("/")[-1]
        base = details.get(f"control/{name}")
        if not key.startswith("defended/") or base is None:
            continue
        pd, pb = d["whitebox"]["pgd"].get("8"), base["whitebox"]["pgd"].get("8")
        if pd and pb:
            out[name] = "holds" if _holds(pd, pb) else "does not hold"
    return out


def table(details: dict[str, Any], adaptive: dict[str, Any]) -> list[str]:
    rows = ["| model | clean (subset) | Hybrid test AEs | noise 8/255 | PGD 8/255 | AutoAttack 8/255 | adaptive GAN k=1 / k search |",
            "|---|---|---|---|---|---|---|"]
    for key, d in details.items():
        if key == "settings":
            continue
        kind, name = key.split("/")
        wb, ht = d["whitebox"], d["hybrid_test"]
        ad = adaptive.get(name, {}).get(kind)
        gan = f"{_pct(ad['k1_untargeted'])} / {_pct(ad['k_search_success'])}" if ad else "—"
        pgd8 = wb["pgd"].get("8")
        rows.append(f"| {kind} {NAMES.get(name, name)} | {_ci(wb['clean'])} | {_ci(ht['adversarial'])} | "
                    f"{_ci(wb['noise'])} | {_ci(pgd8) if pgd8 else '—'} | {_ci(wb['autoattack'])} | {gan} |")
    return rows


def sentences(details: dict[str, Any], adaptive: dict[str, Any], seeds: list[dict[str, Any]]) -> list[str]:
    out = []
    for key, d in details.items():
        if not key.startswith("defended/"):
            continue
        name = key.split("/")[1]
        nice, base = NAMES.get(name, name), details.get(f"control/{name}")
        if base is None:
            continue
        c = d["vs_control"]["adversarial"]
        if c["diff"] == 0:
            how = f"exactly as well as (difference [{100 * c['diff_low']:.1f}, {100 * c['diff_high']:.1f}] points)"
        else:
            how = (f"{abs(100 * c['diff']):.1f} points [{100 * c['diff_low']:.1f}, {100 * c['diff_high']:.1f}] "
                   + ("better" if c["diff"] > 0 else "worse") + " than")
        out.append(f"- Trained on Hybrid CIFAR-10, {nice} classifies the Hybrid test AEs {how} the same network "
                   f"trained on clean images ({c['n']:,} AEs; McNemar {_p(c['p_mcnemar'])}).")
        rv = d["hybrid_test"]["real_vs_adversarial"]
        out.append(f"  On the same sources it scores {100 * rv['acc_a']:.1f}% on the real images and {100 * rv['acc_b']:.1f}% "
                   f"on their AEs (McNemar {_p(rv['p_mcnemar'])}).")
        pd, pb = d["whitebox"]["pgd"].get("8"), base["whitebox"]["pgd"].get("8")
        if pd and pb:
            fat = next((v["whitebox"]["pgd"].get("8") for k, v in details.items() if k.startswith("fast_at/")), None)
            verdict = verdicts(details)[name]
            out.append(f"  Under white-box PGD at 8/255 it keeps {_ci(pd)}% of the subset, its clean control {_ci(pb)}%"
                       + (f", fast adversarial training {_ci(fat)}%" if fat else "")
                       + f": **the Hybrid defence {verdict} under white-box attack** for {nice}.")
        ad = adaptive.get(name, {})
        if "defended" in ad and "control" in ad:
            d_, b_ = ad["defended"], ad["control"]
            out.append(f"  The paper's GAN, retrained against it, fools {_pct(d_['k1_untargeted'])}% at k = 1 "
                       f"and {_pct(d_['k_search_success'])}% with the k search (its control: "
                       f"{_pct(b_['k1_untargeted'])}% and {_pct(b_['k_search_success'])}%).")
    if seeds:
        for kind in ("defended", "control"):
            vals = [100 * s[kind]["test_acc_adv"] for s in seeds]
            spread = f"sd {statistics.stdev(vals):.1f}" if len(vals) > 1 else "one run"
            out.append(f"- Seeds ({seeds[0]['model']}, {kind}, seeds {', '.join(str(s['seed']) for s in seeds)}): Hybrid test AE "
                       f"accuracy {', '.join(f'{v:.1f}' for v in vals)}% ({spread}): the run-to-run spread to read "
                       "the differences above against.")
    return out


def transfer(details: dict[str, Any]) -> list[str]:
    """Accuracy on the Hybrid test AEs split by the target model each AE was made against."""
    models = [k for k in details if k != "settings" and "adversarial_by_target" in details[k]["hybrid_test"]]
    if not models:
        return []
    targets = list(details[models[0]]["hybrid_test"]["adversarial_by_target"])
    rows = [f"| model | {' | '.join(f'{t} AEs' for t in targets)} |", "|---|" + "---|" * len(targets)]
    for key in models:
        by = details[key]["hybrid_test"]["adversarial_by_target"]
        kind, name = key.split("/")
        rows.append(f"| {kind} {NAMES.get(name, name)} | " + " | ".join(_ci(by[t]) if t in by else "—" for t in targets) + " |")
    n = ", ".join(f"{t} {details[models[0]]['hybrid_test']['adversarial_by_target'][t]['n']:,}" for t in targets)
    return ["Transfer, broken down: accuracy (%) on the Hybrid test AEs by the target model that made them "
            f"({n} AEs), with Wilson 95% intervals.", "", *rows, ""]


def checks(details: dict[str, Any]) -> list[str]:
    flagged = [f"{k}: {c} ({v['detail']})" for k, d in details.items() if k != "settings"
               for c, v in d["whitebox"]["checks"].items() if not v["ok"]]
    dev = details.get("settings", {}).get("autoattack_deviations", {})
    out = ["Sanity checks (Carlini et al. 2019): " + ("all passed." if not flagged else "**flagged**: " + "; ".join(flagged))]
    if dev:
        out.append("AutoAttack deviates from the standard version here: "
                   + ", ".join(f"{k} {v[0]:g} (standard {v[1]:g})" for k, v in dev.items()) + ".")
    return out


def section(details: dict[str, Any], adaptive: dict[str, Any], seeds: list[dict[str, Any]]) -> list[str]:
    s = details.get("settings", {})
    return ["## Does the defence hold?", "",
            f"White-box figures on {s.get('n_images', '?')} class-stratified Hybrid test real images (fp32; "
            f"PGD-{s.get('pgd_steps', '?')}, step {s.get('pgd_step_255', '?')}/255, random start, "
            f"{s.get('pgd_restarts', '?')} restarts; AutoAttack on the first {s.get('autoattack_images', '?')}); "
            "Hybrid test AEs: the whole split. Accuracies in % with Wilson 95% intervals "
            "(reports/robustness.json has every figure, plots/robustness/pgd.png the curves).", "",
            *table(details, adaptive), "", *sentences(details, adaptive, seeds), "", *transfer(details),
            *checks(details), ""]
