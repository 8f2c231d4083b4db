"""Stage adaptive_attack: the paper's own GAN turned on a defended model (robustness study).

A defence is only as good as the attack that knows it (Carlini et al. 2019): for each model in
adaptive.models, train_gan's generator and recipe (the `gan` params) are trained against the
defended model itself, and against its clean control, on the Hybrid training split's real
images; then success at k = 1 and the k search of II-B on held-out Hybrid test real images.
Writes metrics/adaptive.json, models/adaptive/<kind>_<model>.pt and plots/adaptive/<kind>_<model>.csv.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from advhybrid.attacks.advgan import GanConfig, load_target, save_generator, train_generator
from advhybrid.attacks.ksearch import evaluate_at_k, k_grid, run_k_search
from advhybrid.data.subset import stratified_subset
from advhybrid.device import pick_device, set_threads
from advhybrid.io import load_npz, save_csv, save_json
from advhybrid.params import RECORD, RESUME, ParamsError, load_section, stage_parser

KINDS = ("defended", "control")


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, device=True, paths={
        "hybrid": "Hybrid CIFAR-10 folder: {train,test}.npz", "defended": "the defended models: <model>.pt",
        "control": "their clean controls: <model>.pt", "models": "output folder: <kind>_<model>.pt, the generators",
        "metrics": RECORD, "plots": "output folder: <kind>_<model>.csv, the loss curves", "checkpoints": RESUME})
    args = ap.parse_args(argv)
    p = load_section("adaptive", args.params)
    cfg = GanConfig.from_params(load_section("gan", args.params))
    names = p.names("models")
    grid = k_grid(p["k_min"], p["k_max"], p["k_step"], where="adaptive")
    n_train, n_eval, seed = p.typed("train_images", int), p.typed("eval_images", int), p.typed("seed", int)
    set_threads()
    device = pick_device(args.device)

    keys = ["images", "labels", "is_adv"]
    train, test = load_npz(f"{args.hybrid}/train.npz", keys), load_npz(f"{args.hybrid}/test.npz", keys)
    real_tr, real_te = np.flatnonzero(train["is_adv"] == 0), np.flatnonzero(test["is_adv"] == 0)
    for key, n, pool in (("train_images", n_train, real_tr), ("eval_images", n_eval, real_te)):
        if n < 1:
            raise ParamsError(f"{p.source}: 'adaptive.{key}'={n} must be >= 1")
    tr = real_tr[stratified_subset(train["labels"][real_tr], n_train, seed)]
    te = real_te[stratified_subset(test["labels"][real_te], n_eval, seed)]
    folders = {"defended": args.defended, "control": args.control}
    targets = {(kind, n): load_target(f"{folders[kind]}/{n}.pt", n) for n in names for kind in KINDS}

    out: dict[str, dict] = {n: {} for n in names}
    for (kind, n), (model, sha) in targets.items():
        tag = f"{kind}_{n}"
        G, history = train_generator(model, train["images"][tr], train["labels"][tr], cfg, device,
                                     checkpoint=f"{args.checkpoints}/{tag}.pt", run_key=sha, desc=f"adaptive GAN [{tag}]")
        at_k1 = evaluate_at_k(model, G, test["images"][te], test["labels"][te], 1.0, device, cfg.batch_size)
        r = run_k_search(model, G, test["images"][te], test["labels"][te], grid, device, cfg.batch_size,
                         desc=f"k search [{tag}]")
        out[n][kind] = {
            "k1_untargeted": at_k1["untargeted_success"], "k1_targeted": at_k1["targeted_success"],
            "perturbation_cosine": at_k1["perturbation_cosine"], "clean_accuracy": at_k1["clean_accuracy"],
            "k_search_success": round(len(r.k) / r.n_attacked, 6) if r.n_attacked else None,
            "mean_k": round(float(np.mean(r.k)), 6) if len(r.k) else None,
            "n_attacked": r.n_attacked, "gan_steps": history[-1]["step"] if history else 0,
        }
        save_generator(f"{args.models}/{tag}.pt", G, target=n, target_sha256=sha, config=asdict(cfg), kind=kind)
        save_csv(f"{args.plots}/{tag}.csv", history)
        m = out[n][kind]
        print(f"{tag}: GAN at k=1 fools {m['k1_untargeted']}, k search {m['k_search_success']} of "
              f"{m['n_attacked']} correctly classified held-out images")
    save_json(args.metrics, out)


if __name__ == "__main__":
    main()
