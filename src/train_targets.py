"""Stage train_targets: the five classifiers the GAN will attack, trained on clean CIFAR-10."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from advhybrid.data.subset import stratified_subset
from advhybrid import dist, workers
from advhybrid.device import pick_device, set_threads
from advhybrid.evaluation.metrics import classification_metrics
from advhybrid.io import load_npz, save_csv, save_json
from advhybrid.models import build_model, count_parameters, save_model
from advhybrid.params import RECORD, RESUME, load_section, stage_parser
from advhybrid.training import TrainConfig, fit, predict

Split = tuple[np.ndarray, np.ndarray]  # images, labels


def train_target(name: str, width: float, cfg: TrainConfig, train: Split, test: Split, device: torch.device,
                 checkpoint: str) -> tuple[nn.Module, list[dict], float, float] | None:
    """One target, trained and tested: (model, history, test accuracy, minutes); None on ranks
    other than 0. A job of `targets.jobs` (advhybrid.workers): it may run in a worker process."""
    t0 = time.perf_counter()
    model = build_model(name, num_classes=10, width=width, seed=cfg.seed)
    # The test split only draws the curves here; the last epoch's weights are kept.
    model, history = fit(model, train, test, cfg, device, checkpoint=checkpoint, name=name, select_best=False)
    if not dist.is_main():  # rank 0 alone tests and writes; the others go on to the next model
        return None
    pred = predict(model, test[0], device).argmax(1).numpy()
    acc = classification_metrics(test[1], pred)["accuracy"]
    return model, history, acc, round((time.perf_counter() - t0) / 60, 2)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={
        "data": "CIFAR-10 folder: {train,test}.npz", "models": "output folder: <target>.pt", "metrics": RECORD,
        "plots": "output folder: <target>.csv, the training curves", "checkpoints": RESUME})
    args = ap.parse_args(argv)
    p = load_section("targets", args.params)
    cfg = TrainConfig.from_section(p)
    set_threads()
    device = dist.init(pick_device())  # torchrun: this rank's device; one process: as before
    n_jobs = workers.jobs_param(p)  # targets trained at once, each in its own process

    train = load_npz(f"{args.data}/train.npz", ["images", "labels"])
    test = load_npz(f"{args.data}/test.npz", ["images", "labels"])
    tr = stratified_subset(train["labels"], p.typed("train_images", int), cfg.seed)
    te = stratified_subset(test["labels"], p.typed("test_images", int), cfg.seed)
    x, y = train["images"][tr], train["labels"][tr]
    xt, yt = test["images"][te], test["labels"][te]

    jobs = {name: (name, p.per_model("width", name, float), cfg, (x, y), (xt, yt), device,
                   f"{args.checkpoints}/{name}.pt") for name in p["models"]}
    results = {}
    for name, out in workers.run(train_target, jobs, n_jobs):
        if out is None:
            continue
        model, history, acc, minutes = out
        results[name] = {
            "test_acc": acc,
            "train_acc": history[-1]["train_acc"],
            "train_loss": history[-1]["train_loss"],
            "epochs": len(history),
            "params": count_parameters(model),
            "minutes": minutes,
        }
        save_model(f"{args.models}/{name}.pt", model, name, 10, jobs[name][1], test_acc=acc)
        save_csv(f"{args.plots}/{name}.csv", history)
        print(f"{name}: clean test accuracy {acc:.4f}")
    if dist.is_main():
        save_json(args.metrics, results)


if __name__ == "__main__":
    main()
