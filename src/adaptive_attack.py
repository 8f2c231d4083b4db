"""Stage adaptive_attack: the paper's GAN turned on a defended model (robustness study).

A defence is only as good as the attack that knows it (Carlini et al. 2019): for each model in
adaptive.models, train_gan's generator and recipe (the `gan` params) are trained against the
defended model itself, and against its same-sources control, on the Hybrid training split's real
images; then both are attacked at k = 1 and with the k search of II-B on the same held-out
Hybrid test real images.

Steps: the adaptive G takes as many optimiser steps as train_gan's, gan.epochs *
ceil(gan.train_images / gan.batch_size) (train_generator: ceil(n / batch_size) steps per epoch
over its n images; train_gan's n is gan.train_images less those its target misclassifies, so this
is the most any train_gan generator takes). An adaptive "epoch" is ceil(gan.train_images /
gan.batch_size) full batches drawn by cycling through adaptive.train_images' correctly classified
images in seeded permutations, so the one-cycle schedule spans the same steps as train_gan's.

Accuracy under attack: over ALL held-out images, an image is robust when it is classified
correctly clean and after the attack; Wilson 95% intervals, and defended vs control paired on
the same images (McNemar exact, Newcombe interval).
Writes metrics/adaptive.json, models/adaptive/<kind>_<model>.pt and plots/adaptive/<kind>_<model>.csv.
Each (kind, model)'s GAN and its evaluation is a job of `adaptive.jobs` (advhybrid.workers);
this process pairs the two kinds and writes every output.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from advhybrid.attacks.advgan import GanConfig, load_target, predict_top2, save_generator, train_generator
from advhybrid.attacks.ksearch import evaluate_at_k, k_grid, k_search_batch
from advhybrid.data.subset import stratified_subset
from advhybrid import workers
from advhybrid.device import images_to_device, memory_format, pick_device, set_threads
from advhybrid.evaluation.stats import accuracy_with_interval, paired_comparison
from advhybrid.io import load_npz, save_csv, save_json
from advhybrid.params import RECORD, RESUME, ParamsError, load_section, stage_parser

KINDS = ("defended", "control")
Split = tuple[np.ndarray, np.ndarray]  # images, labels


def draws_per_epoch(cfg: GanConfig, gan_train_images: int) -> int:
    """Images per adaptive epoch: train_gan's ceil(gan.train_images / batch_size) batches, all full."""
    return -(-gan_train_images // cfg.batch_size) * cfg.batch_size


def gan_step_budget(cfg: GanConfig, gan_train_images: int) -> int:
    """train_gan's generator steps for a target that gets all gan.train_images right."""
    return cfg.epochs * (draws_per_epoch(cfg, gan_train_images) // cfg.batch_size)


def real_subset(labels: np.ndarray, n: int, seed: int, key: str, hybrid: str) -> np.ndarray:
    """stratified_subset of a Hybrid split's real images, whose classes are as uneven as the
    GAN's success left them: a class too small for its share of n is a params error, named as one."""
    try:
        return stratified_subset(labels, n, seed)
    except ValueError as e:  # its own rule decides; this names the key and what would fit
        counts = np.bincount(labels, minlength=10)
        c = int(counts.argmin())
        raise ParamsError(f"{key}={n} asks up to {-(-n // 10)} real images per class, but class {c} has "
                          f"{counts[c]} in {hybrid}; give at most {10 * counts[c]}") from e


def cycle(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` items of `pool` taken through successive seeded permutations of it: each appears
    floor or ceil(n / len(pool)) times (a random subset when n < len(pool))."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(pool) for _ in range(-(-n // len(pool)))])[:n]


def training_draws(target: nn.Module, images: np.ndarray, labels: np.ndarray, n: int, seed: int,
                   device: torch.device, where: str) -> tuple[np.ndarray, int]:
    """(indices of `n` draws, distinct images) for train_generator, which first drops what `target`
    misclassifies: every draw must survive that, or it takes fewer steps. The last check is its own
    predict_top2 on the very array it will get (under bf16 autocast a borderline label can
    depend on the batch it is in); a draw it would drop removes that image, and we draw again."""
    target = target.to(device, memory_format=memory_format(device)).eval()

    def wrong(idx: np.ndarray) -> np.ndarray:
        pred, _ = predict_top2(target, images_to_device(images[idx], device), device)
        return np.unique(idx[pred.cpu().numpy() != labels[idx]])

    pool = np.setdiff1d(np.arange(len(images)), wrong(np.arange(len(images))))
    for _ in range(5):
        if not len(pool):
            raise ValueError(f"{where}: the target classifies none of the {len(images)} training images correctly")
        idx = cycle(pool, n, seed)
        bad = wrong(idx)
        if not len(bad):
            return idx, len(np.unique(idx))
        pool = np.setdiff1d(pool, bad)
    raise RuntimeError(f"{where}: the target's labels on the training images keep changing between batches")


def outcomes(model: nn.Module, G: nn.Module, images: np.ndarray, labels: np.ndarray, grid: np.ndarray,
             device: torch.device, batch_size: int) -> dict[str, np.ndarray]:
    """Per image, through run_k_search's own k_search_batch (so the same attack, fp32, uint8-rounded):
    correct (clean), fooled_k1 / targeted_k1 (label changed / became t at k = 1), k_idx (first grid
    index that changed it; -1: none, or not attacked because misclassified clean)."""
    fmt = memory_format(device)
    model, G = model.to(device, memory_format=fmt).eval(), G.to(device, memory_format=fmt).eval()
    x, y = images_to_device(images, device), torch.as_tensor(labels, dtype=torch.long, device=device)
    one, grid_t = torch.ones(1, device=device), torch.as_tensor(grid, dtype=torch.float32, device=device)
    rows = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        r1, rk = k_search_batch(model, G, xb, yb, one, device), k_search_batch(model, G, xb, yb, grid_t, device)
        hit_t = r1["success"] & (r1["pred"] == r1["t"])
        rows.append(torch.stack([v.long() for v in (rk["attacked"], r1["success"], hit_t, rk["k_idx"])]))
    correct, fooled, targeted, k_idx = torch.cat(rows, 1).cpu().numpy() if rows else np.zeros((4, 0), np.int64)
    return {"correct": correct.astype(bool), "fooled_k1": fooled.astype(bool), "targeted_k1": targeted.astype(bool),
            "k_idx": k_idx}


def robust(o: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Right clean and still right after the attack; an image wrong clean is never robust."""
    return {"k1": o["correct"] & ~o["fooled_k1"], "k_search": o["correct"] & (o["k_idx"] < 0)}


def kind_metrics(o: dict[str, np.ndarray], grid: np.ndarray, cosine: float | None) -> dict:
    """The old success rates (over correctly classified images) and the new accuracies (over all)."""
    n_att, won = int(o["correct"].sum()), o["k_idx"] >= 0
    rate = lambda v: round(int(v.sum()) / n_att, 6) if n_att else None  # noqa: E731
    r = robust(o)
    return {
        "k1_untargeted": rate(o["fooled_k1"]), "k1_targeted": rate(o["targeted_k1"]),
        "perturbation_cosine": cosine, "clean_accuracy": round(n_att / len(won), 6) if len(won) else None,
        "k_search_success": rate(won),
        "mean_k": round(float(np.mean(grid.astype(np.float32)[o["k_idx"][won]])), 6) if won.any() else None,
        "n_attacked": n_att,
        "acc_k1": accuracy_with_interval(r["k1"]), "acc_k_search": accuracy_with_interval(r["k_search"]),
    }


def paired(outs: dict[str, dict[str, np.ndarray]]) -> dict[str, dict]:
    """Defended (a) vs control (b) on the same held-out images, at k = 1 and under the k search."""
    rd, rc = robust(outs["defended"]), robust(outs["control"])
    return {f"paired_{key}": {"a": "defended", "b": "control", **paired_comparison(rd[key], rc[key])}
            for key in ("k1", "k_search")}


def adaptive_gan(tag: str, model: nn.Module, sha: str, train: Split, draws: int, seed: int, held_out: Split,
                 grid: np.ndarray, cfg: GanConfig, device: torch.device, checkpoint: str, where: str,
                 ) -> tuple[nn.Module, list[dict], dict[str, np.ndarray], float | None, int]:
    """One (kind, model)'s GAN trained against it, then it attacked on the held-out images: (G,
    loss history, per-image outcomes, perturbation cosine at k = 1, distinct training images).
    A job of `adaptive.jobs` (advhybrid.workers): the outcomes come back whole, so the parent
    pairs defended with control on the same images."""
    idx, distinct = training_draws(model, *train, draws, seed, device, where)
    G, history = train_generator(model, train[0][idx], train[1][idx], cfg, device, checkpoint=checkpoint,
                                 run_key=sha, desc=f"adaptive GAN [{tag}]")
    cosine = evaluate_at_k(model, G, *held_out, 1.0, device, cfg.batch_size)["perturbation_cosine"]
    return G, history, outcomes(model, G, *held_out, grid, device, cfg.batch_size), cosine, distinct


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, device=True, paths={
        "hybrid": "Hybrid CIFAR-10 folder: {train,test}.npz", "defended": "the defended models: <model>.pt",
        "control": "their same-sources controls: <model>.pt", "models": "output folder: <kind>_<model>.pt, the generators",
        "metrics": RECORD, "plots": "output folder: <kind>_<model>.csv, the loss curves", "checkpoints": RESUME})
    args = ap.parse_args(argv)
    p, gp = load_section("adaptive", args.params), load_section("gan", args.params)
    cfg = GanConfig.from_params(gp)
    names = p.names("models")
    grid = k_grid(p["k_min"], p["k_max"], p["k_step"], where="adaptive")
    n_train, n_eval, seed = p.typed("train_images", int), p.typed("eval_images", int), p.typed("seed", int)
    gan_train = gp.typed("train_images", int)
    for key, n in (("adaptive.train_images", n_train), ("adaptive.eval_images", n_eval), ("gan.train_images", gan_train)):
        if n < 1:
            raise ParamsError(f"{p.source}: '{key}'={n} must be >= 1")
    draws, budget = draws_per_epoch(cfg, gan_train), gan_step_budget(cfg, gan_train)
    set_threads()
    device = pick_device(args.device)
    n_jobs = workers.jobs_param(p)  # GANs trained at once, each in its own process (never under torchrun)

    keys = ["images", "labels", "is_adv"]
    train, test = load_npz(f"{args.hybrid}/train.npz", keys), load_npz(f"{args.hybrid}/test.npz", keys)
    real_tr, real_te = np.flatnonzero(train["is_adv"] == 0), np.flatnonzero(test["is_adv"] == 0)
    key = f"{p.source}: 'adaptive.%s_images'"
    tr = real_tr[real_subset(train["labels"][real_tr], n_train, seed, key % "train", f"{args.hybrid}/train.npz")]
    te = real_te[real_subset(test["labels"][real_te], n_eval, seed, key % "eval", f"{args.hybrid}/test.npz")]
    folders = {"defended": args.defended, "control": args.control}
    targets = {(kind, n): load_target(f"{folders[kind]}/{n}.pt", n) for n in names for kind in KINDS}

    learn, held_out = (train["images"][tr], train["labels"][tr]), (test["images"][te], test["labels"][te])
    jobs = {f"{kind}_{n}": (f"{kind}_{n}", *targets[kind, n], learn, draws, seed, held_out, grid, cfg, device,
                            f"{args.checkpoints}/{kind}_{n}.pt", f"{args.hybrid}/train.npz [{kind}_{n}]")
            for n in names for kind in KINDS}
    out: dict[str, dict] = {n: {} for n in names}
    outs: dict[str, dict[str, dict[str, np.ndarray]]] = {n: {} for n in names}
    for tag, (G, history, o, cosine, distinct) in workers.run(adaptive_gan, jobs, n_jobs):
        kind, n = tag.split("_", 1)
        steps = history[-1]["step"] if history else 0
        if steps != budget:
            warnings.warn(f"{tag}: the GAN took {steps} steps, not train_gan's {budget}")
        outs[n][kind] = o
        out[n][kind] = m = {**kind_metrics(o, grid, cosine), "gan_steps": steps, "gan_train_images": distinct}
        save_generator(f"{args.models}/{tag}.pt", G, target=n, target_sha256=jobs[tag][2], config=asdict(cfg), kind=kind)
        save_csv(f"{args.plots}/{tag}.csv", history)
        print(f"{tag}: {steps} GAN steps; accuracy under attack {m['acc_k1']['acc']:.3f} at k=1, "
              f"{m['acc_k_search']['acc']:.3f} with the k search, of {m['acc_k1']['n']} held-out images")
        if len(outs[n]) == len(KINDS):  # the jobs come back in order: control after its defended model
            out[n] |= paired(outs[n])
    save_json(args.metrics, out)


if __name__ == "__main__":
    main()
