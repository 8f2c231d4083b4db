"""Clean CIFAR-10 test accuracy against CPU minutes for each target network, per training recipe.

The targets must reach 80% clean accuracy (report.goals.target_clean_acc) and the reference run
get well below that at the reference scale (metrics/targets.json): is the recipe or the budget to blame? Each recipe trains the
same networks (conf/scale/reference.yaml's widths) on the same class-stratified images:

  current       the targets section composed from conf/config.yaml + conf/scale/reference.yaml
                (AdamW lr 0.002, weight decay 5e-4, label smoothing 0.1, batch 100, crop + flip),
                through the project's trainer (advhybrid.training.fit); one cosine cycle over
                the run, as the reference scale's restart_epochs = epochs gives
  sgd_onecycle  SGD, Nesterov momentum 0.9, weight decay 5e-4, one-cycle LR (25% warm-up from
                peak/25, cosine down) to a peak of 0.05 (--sgd-lr; at 0.1 ResNet-56 diverged to a
                uniform output in a 150-step probe), label smoothing 0.1, the same batches and
                augmentation; a compact loop here, since the trainer only builds AdamW + warm restarts
  adamw_onecycle  the current optimizer and peak lr on the one-cycle schedule (not run by default):
                separates the schedule's effect from the optimizer's

Every recipe is tested with and without flip test-time augmentation (the sum of the logits of x
and of its mirror). Minutes are training only: wall-clock, and the process's CPU time (all
threads). The last column scales the wall minutes to the reference budget (targets.train_images
x targets.epochs of conf/scale/reference.yaml) linearly in image passes.

Shared cores: a 2-thread process slows far more than 2x when other jobs run (every op waits for
its slower thread); `ADVHYBRID_THREADS=1` gives steadier, if slower, comparisons then.

    python bench/target_recipe.py         # resnet56 + shufflenetv2, 10,000 images x 3 epochs: ~11 min on 2 quiet cores
    python bench/target_recipe.py --models resnet56 --images 25000 --epochs 4   # the reference budget
    python bench/target_recipe.py --images 500 --epochs 1 --models resnet56 --test-images 1000
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from advhybrid.data.cifar import import_cifar, resolve_source
from advhybrid.data.subset import stratified_subset
from advhybrid.device import autocast, images_to_device, memory_format, pick_device, set_threads
from advhybrid.io import load_npz
from advhybrid.models import build_model
from advhybrid.params import Section
from advhybrid.training import TrainConfig, augment, fit, predict

ROOT = Path(__file__).resolve().parents[1]
Data = tuple[np.ndarray, np.ndarray]


def reference_targets() -> dict:
    """The targets section as `dvc exp run -S scale=reference` composes it (Hydra merges the
    scale file over the method; `defaults` and `???` are Hydra's, not values)."""
    method = OmegaConf.load(ROOT / "conf/config.yaml")
    method.pop("defaults", None)
    merged = OmegaConf.merge(method, OmegaConf.load(ROOT / "conf/scale/reference.yaml"))
    return OmegaConf.to_container(merged.targets)


def load_cifar(data: Path) -> tuple[Data, Data]:
    """The pipeline's own npz (download_cifar's output) when present, else the source it reads:
    $ADVHYBRID_CIFAR_SOURCE, ../shared's image-folder archive, or the official download."""
    if (data / "train.npz").is_file() and (data / "test.npz").is_file():
        tr, te = (load_npz(data / f"{s}.npz", ["images", "labels"]) for s in ("train", "test"))
        return (tr["images"], tr["labels"]), (te["images"], te["labels"])
    shared = ROOT.parent / "shared/data/cifar10-jpeg.tar.gz"
    source = resolve_source(str(shared) if shared.is_file() else "official")
    splits = import_cifar(source, ROOT / "data/raw/download")
    return splits["train"], splits["test"]


def train_current(model: torch.nn.Module, train: Data, epochs: int, device: torch.device, p: dict) -> None:
    cfg = TrainConfig.from_section(Section(p, "targets", "conf/scale/reference.yaml"), epochs=epochs)
    cfg = dataclasses.replace(cfg, restart_epochs=epochs)  # one cosine cycle over the run, as at reference
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's epoch lines: keep stdout the table
        fit(model, train, None, cfg, device, name=model.build_args["name"], select_best=False)


def train_onecycle(model: torch.nn.Module, train: Data, epochs: int, device: torch.device, p: dict,
                   optimizer: str, max_lr: float) -> None:
    """The trainer's single-process step (uint8 on the device, batched crop + flip, channels_last,
    bf16 autocast where the trainer uses it) with another optimizer and a one-cycle schedule."""
    bs, seed = p["batch_size"], p["seed"]
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    x_all = images_to_device(train[0], device)
    y_all = torch.as_tensor(train[1], dtype=torch.long).to(device)
    model.to(device, memory_format=memory_format(device)).train()
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), max_lr, momentum=0.9, nesterov=True, weight_decay=p["weight_decay"])
    else:
        opt = torch.optim.AdamW(model.parameters(), max_lr, weight_decay=p["weight_decay"])
    steps = math.ceil(len(x_all) / bs)
    # Fixed momentum (SGD's 0.9, AdamW's betas): OneCycleLR would otherwise cycle it.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr, total_steps=epochs * steps, pct_start=0.25,
                                                cycle_momentum=False)
    for _ in range(epochs):
        perm = torch.randperm(len(x_all), device=device, generator=gen)
        for s in range(steps):
            idx = perm[s * bs : (s + 1) * bs]
            x = augment(x_all[idx], gen).contiguous(memory_format=memory_format(device))
            with autocast(device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y_all[idx], label_smoothing=p["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{optimizer} one-cycle: non-finite loss (max lr {max_lr})")


def clean_accuracy(model: torch.nn.Module, test: Data, device: torch.device) -> tuple[float, float]:
    """Clean accuracy, and with flip test-time augmentation (summed logits of x and its mirror):
    two forward passes over the test images, not three."""
    images, labels = test
    plain = predict(model, images, device)
    mirrored = plain + predict(model, np.ascontiguousarray(images[:, :, ::-1]), device)  # NHWC: W is axis 2
    y = torch.as_tensor(labels)
    return (plain.argmax(1) == y).float().mean().item(), (mirrored.argmax(1) == y).float().mean().item()


def recipes(sgd_lr: float, p: dict) -> dict[str, Callable[..., None]]:
    """name -> train(model, train, epochs, device, p); adamw_onecycle keeps the current optimizer
    and peak lr and changes only the schedule, so it separates the schedule's effect from SGD's."""
    return {"current": train_current,
            "sgd_onecycle": functools.partial(train_onecycle, optimizer="sgd", max_lr=sgd_lr),
            "adamw_onecycle": functools.partial(train_onecycle, optimizer="adamw", max_lr=p["lr"])}


def main() -> None:
    p = reference_targets()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet56", "shufflenetv2"], choices=p["models"])
    ap.add_argument("--images", type=int, default=10000, help="training images (class-stratified)")
    ap.add_argument("--epochs", type=int, default=3,
                    help="3 keeps the default run under 15 minutes on 2 quiet cores (5 took 18.5)")
    ap.add_argument("--recipes", nargs="+", default=["current", "sgd_onecycle"], choices=list(recipes(0, p)))
    ap.add_argument("--test-images", type=int, default=10000, help="class-stratified CIFAR-10 test images")
    ap.add_argument("--data", type=Path, default=ROOT / "data/raw/cifar10", help="folder of {train,test}.npz, if any")
    ap.add_argument("--sgd-lr", type=float, default=0.05, help="sgd_onecycle's peak lr")
    args = ap.parse_args()
    run = recipes(args.sgd_lr, p)
    set_threads()
    device = pick_device()
    (xtr, ytr), (xte, yte) = load_cifar(args.data)
    tr, te = stratified_subset(ytr, args.images, p["seed"]), stratified_subset(yte, args.test_images, p["seed"])
    train, test = (xtr[tr], ytr[tr]), (xte[te], yte[te])
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {device}, "
          f"{len(tr)} train / {len(te)} test images, load average at start {os.getloadavg()[0]:.1f}")
    budget = p["train_images"] * p["epochs"]  # the reference run's image passes, for the estimate
    print(f"| model | width | recipe | images | epochs | wall min | CPU min | wall min at {p['train_images']} x "
          f"{p['epochs']} (est.) | clean acc | flip-TTA acc |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in args.models:
        width = p["width"][name] if isinstance(p["width"], dict) else p["width"]
        # oneDNN builds and caches its kernels on the first calls: not the first recipe's bill
        run["adamw_onecycle"](build_model(name, 10, width), (train[0][:200], train[1][:200]), 1, device, p)
        for recipe in args.recipes:
            model = build_model(name, 10, width, seed=p["seed"])
            w0, c0 = time.perf_counter(), time.process_time()
            run[recipe](model, train, args.epochs, device, p)
            wall, cpu = (time.perf_counter() - w0) / 60, (time.process_time() - c0) / 60
            acc, tta = clean_accuracy(model, test, device)
            print(f"| {name} | {width:g} | {recipe} | {len(tr)} | {args.epochs} | {wall:.2f} | {cpu:.2f} | "
                  f"{wall * budget / (len(tr) * args.epochs):.1f} | {acc:.4f} | {tta:.4f} |", flush=True)
    print(f"# load average at end {os.getloadavg()[0]:.1f} (other jobs on the cores make every minute noisy)")


if __name__ == "__main__":
    main()
