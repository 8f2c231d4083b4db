"""Stage eval_robustness: does the defence hold? (robustness study, beyond the paper)

For every defended model, its clean control and the adversarially trained reference, in fp32:
white-box PGD at each budget, standard AutoAttack at 8/255 and a random-noise control on a fixed,
class-stratified subset of the Hybrid test split's real images, with the sanity checks recorded;
whole-split accuracy (real, AEs, AEs by the target that made them) with Wilson intervals; McNemar
on each source's (real, AE) pair and on defended against control on the same images.

Writes metrics/robustness.json (headline numbers), reports/robustness.json (everything, with
intervals and tests), plots/robustness/pgd.csv and plots/robustness/pgd.png.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
from pydantic import ValidationError

from advhybrid.attacks.whitebox import AutoAttackSettings, deviations, predict_fp32, to_inputs
from advhybrid.data.subset import stratified_subset
from advhybrid.device import pick_device, set_threads, strict_fp32
from advhybrid.evaluation.figures import accuracy_vs_eps
from advhybrid.evaluation.robustness import RobustnessSettings, compare_on_aes, split_figures, whitebox_figures
from advhybrid.io import load_npz, save_csv, save_json
from advhybrid.models import load_model
from advhybrid.params import RECORD, ParamsError, Section, load_section, stage_parser

TEST_KEYS = ["images", "labels", "is_adv", "source_id", "target_model", "target_names"]


def settings(p: Section) -> RobustnessSettings:
    s = RobustnessSettings(
        eps_255=tuple(float(e) for e in p["eps_255"]),
        **{k: p.typed(k, int) for k in ("pgd_steps", "pgd_restarts", "pgd_check_steps", "autoattack_images",
                                        "batch_size", "seed")},
        **{k: p.typed(k, float) for k in ("pgd_step_255", "noise_eps_255", "masking_ratio")},
        autoattack=autoattack_settings(p),
    )
    if sorted(s.eps_255) != list(s.eps_255) or not s.eps_255 or s.eps_255[0] <= 0:
        raise ParamsError(f"{p.source}: 'robustness.eps_255' must be increasing positive budgets, got {list(s.eps_255)}")
    if s.pgd_steps < 1 or s.pgd_restarts < 1:
        raise ParamsError(f"{p.source}: 'robustness.pgd_steps' and 'pgd_restarts' must be >= 1")
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
        "control": "their clean controls: <model>.pt", "fast_at": "the adversarially trained reference: <model>.pt",
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
    sub = real[stratified_subset(test["labels"][real], n_images, s.seed)]
    # interleave classes so the first autoattack_images of the subset stay class-stratified
    sub = sub[np.argsort(_round_robin(test["labels"][sub]), kind="stable")]
    x, y = to_inputs(test["images"][sub], test["labels"][sub], device)

    details, headline, curve, preds = {}, {}, [], {}
    for key, model in models.items():
        with strict_fp32():   # attacks and labels in true fp32 (no TF32 on CUDA)
            details[key], headline[key], preds[key], rows = _evaluate(key, model, x, y, test, s, device)
        curve += rows
    for n in names:
        details[f"defended/{n}"]["vs_control"] = compare_on_aes(preds[f"defended/{n}"], preds[f"control/{n}"], test)
    details["settings"] = {"n_images": n_images, "subset_class_counts": np.bincount(y.cpu().numpy(), minlength=10).tolist(),
                           **asdict(s) | {"autoattack": s.autoattack.model_dump()},
                           "autoattack_deviations": deviations(s.autoattack)}

    save_json(args.details, details)
    save_json(args.metrics, headline)
    save_csv(args.curve, curve)
    accuracy_vs_eps(args.figure, curve, title=f"White-box PGD-{s.pgd_steps} ({n_images} Hybrid test real images)")


def _evaluate(key: str, model, x, y, test: dict, s: RobustnessSettings, device) -> tuple[dict, dict, np.ndarray, list[dict]]:
    """One model: its details, headline figures, Hybrid test predictions and PGD curve rows."""
    model = model.to(device).float().eval()
    preds = predict_fp32(model, test["images"], device, s.batch_size)
    wb = whitebox_figures(model, x, y, s, key, check_convergence=key.startswith("fast_at/"))
    details = {"whitebox": wb, "hybrid_test": split_figures(preds, test)}
    curve = [{"model": key, "eps_255": float(e), "accuracy": v["acc"]} for e, v in wb["pgd"].items()]
    headline = {"clean": wb["clean"]["acc"], "noise": wb["noise"]["acc"],
                **{f"pgd_{e}": v["acc"] for e, v in wb["pgd"].items()},
                "autoattack": wb["autoattack"]["acc"],
                "hybrid_real": details["hybrid_test"]["real"]["acc"],
                "hybrid_adv": details["hybrid_test"]["adversarial"]["acc"],
                "checks_failed": sum(not c["ok"] for c in wb["checks"].values())}
    print(f"{key}: clean {wb['clean']['acc']:.3f}, PGD 8/255 {wb['pgd'].get('8', {}).get('acc', float('nan')):.3f}, "
          f"AutoAttack {wb['autoattack']['acc']:.3f}; checks "
          + ", ".join(f"{c}={'ok' if v['ok'] else 'FLAGGED'}" for c, v in wb["checks"].items()))
    return details, headline, preds, curve


def _round_robin(labels: np.ndarray) -> np.ndarray:
    """Rank of each item within its class: sorting by it interleaves the classes."""
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    return rank


if __name__ == "__main__":
    main()
