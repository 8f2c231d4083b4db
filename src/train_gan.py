"""Stage train_gan: one AdvGAN-style generator per target classifier (paper II-B).

Writes models/gan/<target>.pt (generator + the target's name and checkpoint sha256),
metrics/gan.json (attack success at k = gan.k_default on held-out test images) and
plots/gan/<target>.csv (loss curves). Resumes from checkpoints/train_gan/<target>.pt.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from advhybrid.attacks.advgan import Generator, GanConfig, load_target, save_generator, train_generator
from advhybrid.attacks.ksearch import evaluate_at_k
from advhybrid.data.subset import stratified_subset
from advhybrid import dist, workers
from advhybrid.device import pick_device, set_threads
from advhybrid.io import check_images, load_npz, save_csv, save_json
from advhybrid.params import RECORD, RESUME, load_section, stage_parser

Split = tuple[np.ndarray, np.ndarray]  # images, labels


def train_gan(name: str, target: nn.Module, sha: str, train: Split, held_out: Split, cfg: GanConfig, k_default: float,
              device: torch.device, checkpoint: str) -> tuple[Generator, list[dict], dict[str, Any]] | None:
    """One target's generator and its attack success at k_default on held-out images: (G, loss
    history, metrics); None on ranks other than 0. A job of `gan.jobs` (advhybrid.workers)."""
    G, history = train_generator(target, *train, cfg, device, checkpoint=checkpoint, run_key=sha, desc=f"gan[{name}]")
    if not dist.is_main():  # rank 0 alone evaluates and writes; the others go on to the next target
        return None
    return G, history, evaluate_at_k(target, G, *held_out, k_default, device, cfg.batch_size)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, device=True, paths={
        "data": "CIFAR-10 folder: {train,test}.npz", "targets": "the target classifiers: <target>.pt",
        "models": "output folder: <target>.pt, one generator each", "metrics": RECORD,
        "plots": "output folder: <target>.csv, the loss curves", "checkpoints": RESUME})
    args = ap.parse_args(argv)
    p = load_section("gan", args.params)
    cfg = GanConfig.from_params(p)
    names = p.names("targets")
    n_train, n_eval = p.typed("train_images", int), p.typed("eval_images", int)
    k_default = p.typed("k_default", float)
    set_threads()
    device = dist.init(pick_device(args.device))  # torchrun: this rank's device; one process: as before
    n_jobs = workers.jobs_param(p)  # generators trained at once, each in its own process

    # Every input is checked before the first minute of training, so nothing is half-written.
    train = load_npz(f"{args.data}/train.npz", ["images", "labels"])
    test = load_npz(f"{args.data}/test.npz", ["images", "labels"])
    check_images(f"{args.data}/train.npz", train["images"])
    check_images(f"{args.data}/test.npz", test["images"])
    targets = {name: load_target(f"{args.targets}/{name}.pt", name) for name in names}
    tr = stratified_subset(train["labels"], n_train, cfg.seed)
    te = stratified_subset(test["labels"], n_eval, cfg.seed)

    learn, held_out = (train["images"][tr], train["labels"][tr]), (test["images"][te], test["labels"][te])
    jobs = {name: (name, target, sha, learn, held_out, cfg, k_default, device, f"{args.checkpoints}/{name}.pt")
            for name, (target, sha) in targets.items()}
    metrics = {}
    for name, out in workers.run(train_gan, jobs, n_jobs):
        if out is None:
            continue
        G, history, metrics[name] = out
        save_generator(f"{args.models}/{name}.pt", G, target=name, target_sha256=jobs[name][2], config=asdict(cfg))
        save_csv(f"{args.plots}/{name}.csv", history)
        m = metrics[name]
        if m["n_attacked"]:
            print(f"{name}: k={k_default:g} untargeted {m['untargeted_success']:.3f} "
                  f"targeted {m['targeted_success']:.3f} mean Linf {m['mean_linf'] * 255:.2f}/255 "
                  f"on {m['n_attacked']} correctly classified test images")
    if dist.is_main():
        save_json(args.metrics, metrics)


if __name__ == "__main__":
    main()
