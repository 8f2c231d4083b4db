"""Stage train_fast_at: a standard adversarial-training reference (robustness study).

`fast_at.model` (ResNet-50, the paper's proposed model) at the width, recipe and epochs of
train@<model>, trained with FGSM from a random start (Wong et al. 2020: eps 8/255, step 10/255)
on the same images as its same-sources control (control@<model>). It shows what a real
defence reaches at this scale, next to the Hybrid one.

The saved epoch is the one with the best PGD accuracy on a fixed, class-stratified batch of the
validation images (`fast_at.pgd_batch`), clean validation accuracy breaking ties, not the best
clean accuracy: FGSM training can overfit catastrophically, robust accuracy collapsing to ~0
within an epoch while clean accuracy keeps rising, and selecting by clean accuracy would keep
exactly that model. Wong et al.'s own early stop (locuslab/fast_adversarial, CIFAR10/
train_fgsm.py --early-stop) attacks the epoch's first training batch with PGD-5 (step 2/255, one
restart, the model in train mode) and stops at the first drop of over 20 points, keeping the
epoch before. Here the batch is held out and the same every epoch, the attack (PGD,
`fast_at.pgd_steps` steps of `pgd_alpha_255`) runs in fp32 on the model in eval mode, as the
robustness study evaluates it, and training always runs to the end: the best epoch is kept.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torchattacks

from advhybrid import dist
from advhybrid.data.control import load_control
from advhybrid.data.subset import stratified_subset
from advhybrid.device import images_to_device, pick_device, set_threads, strict_fp32, to_float
from advhybrid.hybrid_classifier import CONTROL, recipe, train_and_test, write_outputs
from advhybrid.params import RECORD, RESUME, ParamsError, load_section, stage_parser
from advhybrid.training import saved_epoch
from advhybrid.training.adversarial import fgsm_random_start

PGD_COLUMN = "val_pgd_acc"
SELECT_BY = (PGD_COLUMN, "val_acc")  # PGD batch accuracy; on a tie, the clean validation accuracy


def pgd_monitor(images: np.ndarray, labels: np.ndarray, eps: float, alpha: float, steps: int, seed: int,
                device: torch.device) -> Callable[[torch.nn.Module], dict[str, float]]:
    """`fit`'s monitor: {PGD_COLUMN: accuracy of `images` under L-inf PGD from a random start
    (torchattacks.PGD, fp32, the net in eval mode), one batch of them all."""
    x = to_float(images_to_device(images, device)).contiguous()
    y = torch.as_tensor(labels, dtype=torch.long, device=device)
    cuda = [device] if device.type == "cuda" else []

    def monitor(net: torch.nn.Module) -> dict[str, float]:
        # torchattacks draws its start from the global RNG: seeded here, the start is the same every
        # epoch (epochs compare on equal terms); forked, training's own draws stay untouched.
        with torch.random.fork_rng(devices=cuda), strict_fp32():
            torch.manual_seed(seed)
            adv = torchattacks.PGD(net.eval(), eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
            with torch.no_grad():
                return {PGD_COLUMN: (net(adv).argmax(1) == y).float().mean().item()}

    return monitor


def selection(history: list[dict]) -> dict:
    """The kept epoch's PGD figure, and what clean accuracy would have kept: they differ when
    robustness collapsed while clean accuracy rose."""
    best, clean = saved_epoch(history, select_by=SELECT_BY), saved_epoch(history)
    return {"selected_by": PGD_COLUMN, PGD_COLUMN: best[PGD_COLUMN],
            "clean_best_epoch": clean["epoch"], f"clean_best_{PGD_COLUMN}": clean[PGD_COLUMN]}


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={**CONTROL, "models": "output folder: <fast_at.model>.pt",
                                      "metrics": RECORD, "plots": "output plot: the training curve (CSV)",
                                      "checkpoints": RESUME})
    args = ap.parse_args(argv)
    p, t = load_section("fast_at", args.params), load_section("train", args.params)
    name = p.typed("model", str)
    cfg, width = recipe(t, name, "'fast_at.model'")
    eps, alpha = p.typed("eps_255", float) / 255, p.typed("alpha_255", float) / 255
    pgd_alpha, pgd_steps = p.typed("pgd_alpha_255", float) / 255, p.typed("pgd_steps", int)
    pgd_n = p.typed("pgd_batch", int)
    if not (0 < eps <= 1 and 0 < alpha <= 1 and 0 < pgd_alpha <= 1):
        raise ParamsError(f"{args.params}: 'fast_at.eps_255', 'alpha_255' and 'pgd_alpha_255' must be in (0, 255]")
    if pgd_steps < 1 or pgd_n < 1:
        raise ParamsError(f"{args.params}: 'fast_at.pgd_steps' and 'fast_at.pgd_batch' must be >= 1")
    set_threads()
    device = dist.init(pick_device())  # torchrun: this rank's device; one process: as before

    train, val, test = load_control(args.hybrid)
    held = stratified_subset(val[1], pgd_n, seed=cfg.seed)  # all of val when it is smaller
    monitor = pgd_monitor(val[0][held], val[1][held], eps, pgd_alpha, pgd_steps, cfg.seed, device)
    model, metrics, history, pred = train_and_test(
        name, width, cfg, train, val, test, device, checkpoint=f"{args.checkpoints}/{name}.pt",
        perturb=fgsm_random_start(eps, alpha), monitor=monitor, select_by=SELECT_BY,
        key_extra={"fgsm_rs": [eps, alpha], "pgd_select": [len(held), pgd_steps, pgd_alpha]})
    metrics |= {"eps_255": eps * 255, "alpha_255": alpha * 255, "pgd_batch": len(held), "pgd_steps": pgd_steps,
                "pgd_alpha_255": pgd_alpha * 255, **selection(history)}
    if dist.is_main():  # only rank 0 writes
        write_outputs(model, name, width, metrics, history, test["labels"], pred,
                      f"{args.models}/{name}.pt", args.metrics, args.plots)


if __name__ == "__main__":
    main()
