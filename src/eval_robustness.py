"""Stage eval_robustness: does the defence hold? (robustness study, beyond the paper)

For every defended model, its same-sources control and the adversarially trained reference, in
fp32 on a fixed, class-stratified subset of the Hybrid test split's real images: a random-noise
control, white-box PGD chained over the budgets (each budget attacks the previous one's
survivors), standard AutoAttack on PGD's survivors at 8/255 (the figure is PGD and AutoAttack
together), PGD at 255/255 and the sanity checks, with every figure's per-image outcomes. On the
whole Hybrid test split: accuracy (real, AEs, AEs by the target that made them) with Wilson
intervals and McNemar on each source's (real, AE) pair. Defended against control: paired on the
subset under PGD + AutoAttack, on the AEs and real images, and the AE-specific effect.

Writes metrics/robustness.json (headline numbers), reports/robustness.json (everything, with
intervals, tests and per-image outcomes), plots/robustness/pgd.csv and plots/robustness/pgd.png.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
from pydantic import ValidationError

from advhybrid.attacks.whitebox import AutoAttackSettings, deviations, pgd_alpha, predict_fp32, to_inputs
from advhybrid.data.subset import stratified_subset
from advhybrid.device import pick_device, set_threads, strict_fp32
from advhybrid.evaluation.effect import ae_effect
from advhybrid.evaluation.figures import accuracy_vs_eps
from advhybrid.evaluation.robustness import (
    RobustnessSettings, compare_on_aes, from_bits, split_figures, whitebox_figures,
)
from advhybrid.evaluation.stats import paired_comparison
from advhybrid.io import load_npz, save_csv, save_json
from advhybrid.models import load_model
from advhybrid.params import RECORD, ParamsError, Section, load_section, stage_parser

TEST_KEYS = ["images", "labels", "is_adv", "source_id", "target_model", "target_names"]


def settings(p: Section) -> RobustnessSettings:
    s = RobustnessSettings(
        eps_255=tuple(float(e) for e in p["eps_255"]),
        **{k: p.typed(k, int) for k in ("pgd_steps", "pgd_restarts", "pgd_check_steps", "batch_size", "seed")},
        **{k: p.typed(k, float) for k in ("noise_eps_255", "masking_ratio")},
        autoattack=autoattack_settings(p),
    )
    if sorted(set(s.eps_255)) != list(s.eps_255) or not s.eps_255 or s.eps_255[0] <= 0:
        raise ParamsError(f"{p.source}: 'robustness.eps_255' must be increasing positive budgets, got {list(s.eps_255)}")
    if s.pgd_steps < 1 or s.pgd_restarts < 1 or s.pgd_check_steps < 1:
        raise ParamsError(f"{p.source}: 'robustness.pgd_steps', 'pgd_restarts' and 'pgd_check_steps' must be >= 1")
    if s.autoattack.eps_255 not in s.eps_255:
        raise ParamsError(f"{p.source}: 'robustness.autoattack.eps_255'={s.autoattack.eps_255:g} must be one of "
                          f"'robustness.eps_255' {list(s.eps_255)} (AutoAttack runs on that budget's PGD survivors)")
    return s


def autoattack_settings(p: Section) -> AutoAttackSettings:
    try:
        return AutoAttackSettings.model_validate(dict(p["autoattack"]))
    except ValidationError as e:
        raise ParamsError(f"{p.source}: " + "; ".join(
            f"'robustness.autoattack.{'.'.join(map(str, err['loc']))}': {err['msg']}" for err in e.errors(include_url=False)
        )) from None


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, device=True, raw_doc=True, paths={
        "test": "the Hybrid test split (npz)", "defended": "the defended models: <model>.pt",
        "control": "their same-sources controls: <model>.pt", "fast_at": "the adversarially trained reference: <model>.pt",
        "details": "output: everything, with intervals and tests (JSON)", "metrics": RECORD,
        "curve": "output plot: accuracy against the PGD budget (CSV)", "figure": "output figure: the same curve"})
    args = ap.parse_args(argv)
    p = load_section("robustness", args.params)
    s = settings(p)
    names = p.names("models")
    fast_at = p.typed("fast_at_model", str)
    n_images = p.typed("n_images", int)
    set_threads()
    device = pick_device(args.device)

    test = load_npz(args.test, TEST_KEYS)
    paths = {**{f"defended/{n}": f"{args.defended}/{n}.pt" for n in names},
             **{f"control/{n}": f"{args.control}/{n}.pt" for n in names}, f"fast_at/{fast_at}": f"{args.fast_at}/{fast_at}.pt"}
    models = {key: load_model(path)[0] for key, path in paths.items()}  # every file checked before any attack

    real = np.flatnonzero(test["is_adv"] == 0)
    if not 0 < n_images <= len(real):
        raise ParamsError(f"{p.source}: 'robustness.n_images'={n_images} must be in 1..{len(real)} (real test images)")
    sub = real[stratified_subset(test["labels"][real], n_images, s.seed)]  # sorted test-split indices
    x, y = to_inputs(test["images"][sub], test["labels"][sub], device)

    details, headline, curve, preds = {}, {}, [], {}
    for key, model in models.items():
        with strict_fp32():   # attacks and labels in true fp32 (no TF32 on CUDA)
            details[key], headline[key], preds[key], rows = _evaluate(key, model, x, y, test, s, device)
        curve += rows
    for n in names:
        details[f"defended/{n}"] |= versus_control(details[f"defended/{n}"], details[f"control/{n}"],
                                                   preds[f"defended/{n}"], preds[f"control/{n}"], test, s)
    details["settings"] = _settings_record(s, sub, test["labels"][sub])

    save_json(args.details, details)
    save_json(args.metrics, headline)
    save_csv(args.curve, curve)
    accuracy_vs_eps(args.figure, curve, title=f"White-box PGD-{s.pgd_steps}, chained over budgets "
                                              f"({n_images} Hybrid test real images)")


def _settings_record(s: RobustnessSettings, sub: np.ndarray, labels: np.ndarray) -> dict:
    """The settings, the subset (Hybrid test indices, the order of every per-image string) and
    PGD's step at each budget."""
    return {"n_images": len(sub), "subset_index": sub.tolist(),
            "subset_class_counts": np.bincount(labels, minlength=10).tolist(),
            **asdict(s) | {"autoattack": s.autoattack.model_dump()},
            "pgd_step_255": {f"{e:g}": pgd_alpha(e, s.pgd_steps) for e in s.eps_255},
            "autoattack_deviations": deviations(s.autoattack),
            "per_image": "whitebox.per_image: one '0'/'1' per image of subset_index, in its order (1: still correct)"}


def versus_control(defended: dict, control: dict, pred_d: np.ndarray, pred_c: np.ndarray, test: dict,
                   s: RobustnessSettings) -> dict:
    """A defended model against its same-sources control: paired on the subset's images under PGD
    and AutoAttack together, on the Hybrid test AEs and real images, and the AE-specific effect."""
    robust = [from_bits(m["whitebox"]["per_image"]["pgd_autoattack"]) for m in (defended, control)]
    return {"robust_vs_control": paired_comparison(*robust) | {"figure": "pgd_autoattack",
                                                                "eps_255": s.autoattack.eps_255},
            "vs_control": compare_on_aes(pred_d, pred_c, test),
            "ae_effect": ae_effect(pred_d == test["labels"], pred_c == test["labels"], test, seed=s.seed)}


def _evaluate(key: str, model, x, y, test: dict, s: RobustnessSettings, device) -> tuple[dict, dict, np.ndarray, list[dict]]:
    """One model: its details, headline figures, Hybrid test predictions and PGD curve rows."""
    model = model.to(device).float().eval()
    preds = predict_fp32(model, test["images"], device, s.batch_size)
    wb = whitebox_figures(model, x, y, s, key, check_convergence=key.startswith("fast_at/"))
    details = {"whitebox": wb, "hybrid_test": split_figures(preds, test)}
    curve = [{"model": key, "eps_255": float(e), "accuracy": v["acc"]} for e, v in wb["pgd"].items()]
    headline = {"clean": wb["clean"]["acc"], "noise": wb["noise"]["acc"],
                **{f"pgd_{e}": v["acc"] for e, v in wb["pgd"].items()},
                "pgd_autoattack": wb["pgd_autoattack"]["acc"],
                "hybrid_real": details["hybrid_test"]["real"]["acc"],
                "hybrid_adv": details["hybrid_test"]["adversarial"]["acc"],
                "checks_failed": sum(not c["ok"] for c in wb["checks"].values())}
    aa = wb["pgd_autoattack"]
    e = f"{aa['eps_255']:g}"
    print(f"{key}: clean {wb['clean']['acc']:.3f}, PGD {e}/255 {wb['pgd'][e]['acc']:.3f}, "
          f"with AutoAttack {aa['acc']:.3f}; checks "
          + ", ".join(f"{c}={'ok' if v['ok'] else 'FLAGGED'}{'' if v['decisive'] else ' (undecided)'}"
                      for c, v in wb["checks"].items()))
    return details, headline, preds, curve


if __name__ == "__main__":
    main()
