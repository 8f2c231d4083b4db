"""The report's first section, "Does the defence hold?": tables and plain sentences, every number
read from the robustness study's outputs, every figure with its 95% interval.

The verdict rule is fixed here, before any number is seen. For each defended model, take the
per-image outcomes on the white-box subset (the same images for every model): an image is
robust when it is still classified correctly after PGD at 8/255 AND after AutoAttack at 8/255.
The Hybrid defence holds under white-box attack for that model when, against its same-sources
control on those images,

1. the defended model is robust on more images, by McNemar's exact test p < 0.05 (ALPHA);
2. the paired 95% interval of (defended - control) lies above 0 (Newcombe's score interval); and
3. the difference is at least MIN_EFFECT (5 points): a significant 2% against 0% on 500 images
   is a measurable difference, not a defence anyone would deploy, and it is well below what a
   standard defence (fast adversarial training) reaches at the same scale.

Otherwise it does not hold, and the sentence says which condition failed. What the AEs add on
the transferred AEs is a separate question, answered by the difference in differences
(evaluation/effect.py), never by the accuracy on the AEs alone.
"""
from __future__ import annotations

from typing import Any

NAMES = {"vgg19bn": "VGG19_bn", "shufflenetv2": "ShuffleNetV2", "repvgg_a2": "RepVGG_a2", "resnet50": "ResNet-50"}
ALPHA = 0.05
MIN_EFFECT = 0.05
ROBUST = "pgd_autoattack"   # the whitebox figure the verdict reads: PGD and AutoAttack at 8/255


def _ci(a: dict[str, float] | None) -> str:
    return "—" if not a else f"{100 * a['acc']:.1f} [{100 * a['low']:.1f}, {100 * a['high']:.1f}]"


def _pts(d: dict[str, float]) -> str:
    """A difference in points with its interval: `+1.2 [-0.3, +2.6]`."""
    return f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _pct(v: float | None) -> str:
    """A rate in %, or a dash where nothing was measured (no image to attack: None)."""
    return "—" if v is None else f"{100 * v:.1f}"


def _p(p: float) -> str:
    """`p = 0.03`, or `p < 1e-4` where the exact test's p-value underflows the printed digits."""
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def _paired(c: dict[str, float]) -> dict[str, float]:
    """stats.paired_comparison's difference in the shape _pts prints."""
    return {"diff": c["diff"], "low": c["diff_low"], "high": c["diff_high"]}


def decide(c: dict[str, float]) -> tuple[str, str]:
    """The rule above on one paired comparison (defended = a, control = b): (verdict, why)."""
    if c["diff"] <= 0 or c["p_mcnemar"] >= ALPHA:
        return "does not hold", f"no significant gain over the control (McNemar {_p(c['p_mcnemar'])})"
    if c["diff_low"] <= 0:
        return "does not hold", "the paired interval includes 0"
    if c["diff"] < MIN_EFFECT:
        return "does not hold", f"a gain below the {100 * MIN_EFFECT:.0f}-point minimum"
    return "holds", f"McNemar {_p(c['p_mcnemar'])}, gain of at least {100 * c['diff_low']:.1f} points"


def _models(details: dict[str, Any], kind: str = "defended") -> list[str]:
    return [k.split("/", 1)[1] for k in details if k.startswith(f"{kind}/")]


def verdicts(details: dict[str, Any]) -> dict[str, str]:
    """Per defended model with a paired white-box comparison: "holds" or "does not hold"."""
    return {n: decide(details[f"defended/{n}"]["robust_vs_control"])[0]
            for n in _models(details) if "robust_vs_control" in details[f"defended/{n}"]}


def table(details: dict[str, Any], adaptive: dict[str, Any]) -> list[str]:
    rows = ["| model | clean (subset) | Hybrid test real | Hybrid test AEs | noise 8/255 | PGD 8/255 | "
            "PGD + AutoAttack 8/255 | adaptive GAN (k search) |", "|---|---|---|---|---|---|---|---|"]
    for key, d in details.items():
        if key == "settings":
            continue
        kind, name = key.split("/")
        wb, ht = d["whitebox"], d["hybrid_test"]
        gan = adaptive.get(name, {}).get(kind, {}).get("acc_k_search")
        rows.append(f"| {kind} {NAMES.get(name, name)} | {_ci(wb['clean'])} | {_ci(ht['real'])} | "
                    f"{_ci(ht['adversarial'])} | {_ci(wb['noise'])} | {_ci(wb['pgd'].get('8'))} | "
                    f"{_ci(wb.get(ROBUST))} | {_ci(gan)} |")
    return rows


def effect_table(details: dict[str, Any], seeds: list[dict[str, Any]], seed_effect: dict[str, Any] | None) -> list[str]:
    """Defended minus same-sources control, in points: on the AEs, on their real sources, and the DiD."""
    rows = ["| model | on the Hybrid test AEs | on their real sources | AE-specific (difference in differences) |",
            "|---|---|---|---|"]
    for n in _models(details):
        e = details[f"defended/{n}"].get("ae_effect")
        if e:
            rows.append(f"| {NAMES.get(n, n)} ({e['n_sources']:,} sources) | {_pts(e['adversarial'])} | "
                        f"{_pts(e['real'])} | {_pts(e['did'])} |")
    if seed_effect and seed_effect["did"]["n"] > 1:
        s = seed_effect
        t = {f: {"diff": s[f]["mean"], "low": s[f]["low"], "high": s[f]["high"]} for f in ("adversarial", "real", "did")}
        name = NAMES.get(seeds[0]["model"], seeds[0]["model"])
        rows.append(f"| {name}, mean over seeds {', '.join(map(str, s['seeds']))} (t-interval) | {_pts(t['adversarial'])} | "
                    f"{_pts(t['real'])} | {_pts(t['did'])} |")
    return rows


def _effect_sentence(nice: str, e: dict[str, Any]) -> str:
    did = e["did"]
    if did["low"] > 0:
        reading = "the AEs add accuracy on AEs beyond what they add on real images"
    elif did["high"] < 0:
        reading = "the defended model gains less on the AEs than on their real sources"
    else:
        reading = "no AE-specific effect can be told from zero: what Hybrid training changes, it changes on real images as much"
    return (f"- {nice}: against its same-sources control, Hybrid training changes accuracy by {_pts(e['adversarial'])} "
            f"points on the Hybrid test AEs and by {_pts(e['real'])} on their real sources, an AE-specific effect of "
            f"{_pts(did)} points (paired bootstrap over {e['n_sources']:,} sources): {reading}.")


def _robust_sentence(nice: str, d: dict[str, Any], fast_at: dict[str, Any] | None) -> str:
    c = d["robust_vs_control"]
    verdict, why = decide(c)
    return (f"  Under PGD and AutoAttack at 8/255 it keeps {_ci(d['whitebox'][ROBUST])}% of the subset, its control "
            f"{100 * c['acc_b']:.1f}% (paired difference {_pts(_paired(c))} points, McNemar {_p(c['p_mcnemar'])})"
            + (f"; fast adversarial training keeps {_ci(fast_at)}%" if fast_at else "")
            + f": **the Hybrid defence {verdict} under white-box attack** for {nice} ({why}).")


def _adaptive_sentence(ad: dict[str, Any]) -> str | None:
    if not {"defended", "control"} <= set(ad) or "acc_k_search" not in ad["defended"]:
        return None
    d, c, pc = ad["defended"], ad["control"], ad.get("paired_k_search")
    steps = f" after {d['gan_steps']:,} generator steps" if d.get("gan_steps") else ""
    return (f"  The paper's GAN, retrained against it{steps}, leaves {_ci(d['acc_k_search'])}% of the held-out images "
            f"correctly classified with the k search ({_ci(d.get('acc_k1'))}% at k = 1); against its control "
            f"{_ci(c['acc_k_search'])}%" + (f" (paired difference {_pts(_paired(pc))} points, McNemar {_p(pc['p_mcnemar'])})."
                                             if pc else "."))


def sentences(details: dict[str, Any], adaptive: dict[str, Any], seed_effect: dict[str, Any] | None,
              seeds: list[dict[str, Any]]) -> list[str]:
    fast_at = next((v["whitebox"].get(ROBUST) for k, v in details.items() if k.startswith("fast_at/")), None)
    out = []
    for n in _models(details):
        d, nice = details[f"defended/{n}"], NAMES.get(n, n)
        if "ae_effect" in d:
            out.append(_effect_sentence(nice, d["ae_effect"]))
        if "robust_vs_control" in d:
            out.append(_robust_sentence(nice, d, fast_at))
        line = _adaptive_sentence(adaptive.get(n, {}))
        if line:
            out.append(line)
    if seed_effect and seed_effect["did"]["n"] > 1:
        s, name = seed_effect["did"], NAMES.get(seeds[0]["model"], seeds[0]["model"])
        out.append(f"- Over {s['n']} training seeds ({', '.join(map(str, seed_effect['seeds']))}), {name}'s AE-specific "
                   f"effect is {100 * s['mean']:+.1f} points on average (95% t-interval [{100 * s['low']:+.1f}, "
                   f"{100 * s['high']:+.1f}]; per seed {', '.join(f'{100 * v:+.1f}' for v in s['values'])}): the spread "
                   "of one training run to read the single-run figures against.")
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
    """Which checks failed, and which passed only because every figure they compare was 0."""
    flagged, decisive, vacuous = [], set(), set()
    for k, d in details.items():
        if k == "settings":
            continue
        for c, v in d["whitebox"]["checks"].items():
            if not v["ok"]:
                flagged.append(f"{k}: {c} ({v['detail']})")
            (decisive if v.get("decisive", True) else vacuous).add(c)
    out = ["Sanity checks (Carlini et al. 2019): " + ("all passed." if not flagged else "**flagged**: " + "; ".join(flagged))
           + (f" Decided by a non-zero figure for at least one model: {', '.join(sorted(decisive))}." if decisive else "")
           + (f" Could not fail for some model (every figure compared was 0): {', '.join(sorted(vacuous))}." if vacuous else "")]
    dev = details.get("settings", {}).get("autoattack_deviations", {})
    if dev:
        out.append("AutoAttack deviates from the standard version here: "
                   + ", ".join(f"{k} {v[0]} (standard {v[1]})" for k, v in dev.items()) + ".")
    return out


def section(details: dict[str, Any], adaptive: dict[str, Any], seeds: list[dict[str, Any]],
            seed_effect: dict[str, Any] | None = None) -> list[str]:
    s = details.get("settings", {})
    return ["## Does the defence hold?", "",
            f"Each defended model against its same-sources control (the same network, recipe and sources, each AE "
            f"replaced by its real image). White-box figures on {s.get('n_images', '?')} class-stratified Hybrid test "
            f"real images, the same images for every model (fp32; PGD-{s.get('pgd_steps', '?')} with step 2.5·ε/steps, "
            f"random start, {s.get('pgd_restarts', '?')} restarts; AutoAttack on what PGD leaves); Hybrid test real "
            "images and AEs: the whole split. Accuracies in % with Wilson 95% intervals, differences in points with "
            "paired 95% intervals (reports/robustness.json has every figure and per-image outcome, "
            "plots/robustness/pgd.png the curves).", "",
            *table(details, adaptive), "", "What the AEs add (defended minus control, points):", "",
            *effect_table(details, seeds, seed_effect), "", *sentences(details, adaptive, seed_effect, seeds), "",
            *transfer(details), *checks(details), ""]
