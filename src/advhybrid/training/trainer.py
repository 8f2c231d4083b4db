"""The one training loop every stage uses (targets and defended models).

The paper's recipe (III-C): AdamW (lr 1e-3, weight decay 5e-4), batch size 100,
CosineAnnealingWarmRestarts, cross-entropy. Around it, what a long run needs: the whole
dataset on the device as uint8, crop+flip augmentation as batched tensor ops, bf16 autocast
and channels_last on CUDA, a checkpoint every epoch so a killed run resumes, and a loud stop
on a non-finite loss.

Under torchrun with several processes (`advhybrid.dist`), the same loop is data parallel:
every rank draws the same permutation and the same augmentation for the whole global batch of
`batch_size` and trains on its own contiguous part of it, DistributedDataParallel averages the
gradients, BatchNorm is synchronised, the validation set is split over the ranks and its sums
reduced, and only rank 0 writes the checkpoint. With one process it is the single-device loop,
step for step.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import dist
from ..device import autocast, images_to_device, memory_format, to_float
from ..io import check_entries, data_fingerprint, load_checkpoint, save_torch
from ..params import Section


class NonFiniteLossError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 5e-4
    restart_epochs: int = 10  # T_0 of the warm restarts, in epochs
    restart_mult: int = 1
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0
    compile: bool = False

    @classmethod
    def from_section(cls, s: Section, epochs: int | None = None) -> "TrainConfig":
        cfg = cls(
            epochs=epochs if epochs is not None else s.typed("epochs", int),
            batch_size=s.typed("batch_size", int),
            lr=s.typed("lr", float),
            weight_decay=s.typed("weight_decay", float),
            restart_epochs=s.typed("restart_epochs", int),
            restart_mult=s.typed("restart_mult", int),
            label_smoothing=s.typed("label_smoothing", float),
            augment=s.typed("augment", bool),
            seed=s.typed("seed", int),
            compile=s.typed("compile", bool),
        )
        for key in ("epochs", "batch_size", "restart_epochs", "restart_mult"):
            if getattr(cfg, key) < 1:
                raise ValueError(f"{s.source}: '{s.name}.{key}' must be >= 1, got {getattr(cfg, key)}")
        if cfg.lr <= 0:
            raise ValueError(f"{s.source}: '{s.name}.lr' must be > 0, got {cfg.lr}")
        return cfg

    def key(self, extra: dict | None = None) -> str:
        """Identifies a run, so a checkpoint is only resumed by the run that wrote it."""
        blob = json.dumps({**asdict(self), **(extra or {})}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def augment(x_u8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero pad 4) and horizontal flip for a whole batch, without a Python loop."""
    x = to_float(x_u8)
    n, c, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), device=x.device, generator=gen)
    dx = torch.randint(0, 9, (n,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    x = padded[batch, chans, rows, cols]
    flip = torch.rand(n, device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    device: torch.device,
    batch_size: int = 500,
    tta_flip: bool = False,
) -> torch.Tensor:
    """Logits (float32, on CPU) for uint8 NHWC images; optional flip test-time augmentation."""
    model.eval()
    x_all = images_to_device(images, device)
    out = []
    for i in range(0, len(x_all), batch_size):
        x = to_float(x_all[i : i + batch_size]).contiguous(memory_format=memory_format(device))
        with autocast(device):
            logits = model(x).float()
            if tta_flip:
                logits = logits + model(x.flip(3)).float()
        out.append(logits.cpu())
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model: torch.nn.Module, images, labels, device: torch.device, tta_flip: bool = False) -> dict:
    logits = predict(model, images, device, tta_flip=tta_flip)
    y = torch.as_tensor(labels)
    return {
        "loss": F.cross_entropy(logits, y).item(),
        "acc": (logits.argmax(1) == y).float().mean().item(),
    }


# What picks the kept epoch unless a stage says otherwise: validation accuracy (train@, control@,
# seed@). train_fast_at selects by the PGD accuracy of a held-out batch instead, since clean
# accuracy keeps rising through catastrophic overfitting (Wong et al. 2020).
CLEAN: tuple[str, ...] = ("val_acc",)


def score(row: dict, select_by: Sequence[str] = CLEAN) -> tuple[float, ...]:
    """A history row's rank under `select_by`: higher is better, compared column by column, so
    the later columns only break ties. Without a validation set the default is train_acc."""
    if tuple(select_by) == CLEAN and "val_acc" not in row:
        return (row["train_acc"],)
    missing = [k for k in select_by if k not in row]
    if missing:
        raise ValueError(f"select_by {missing}: not in the history row (it has {list(row)})")
    return tuple(float(row[k]) for k in select_by)


def saved_epoch(history: list[dict], select_best: bool = True, select_by: Sequence[str] = CLEAN) -> dict:
    """The history row of the epoch whose weights `fit` returned (Table 2 reports this epoch):
    the first with the best `score`, or the last one without `select_best`."""
    if not history:
        raise ValueError("empty training history")
    return max(history, key=lambda r: score(r, select_by)) if select_best else history[-1]


def checkpoint_every() -> int:
    """Epochs between checkpoints: $ADVHYBRID_CHECKPOINT_EVERY, default 1. A full-width ResNet-50's
    checkpoint is about 280 MB (weights and AdamW's two moments); on a GPU epochs take seconds,
    so tools/gpu_run.sh writes every few. The last epoch is always written; results do not change."""
    raw = os.environ.get("ADVHYBRID_CHECKPOINT_EVERY", "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"$ADVHYBRID_CHECKPOINT_EVERY={raw!r}: expected a whole number of epochs >= 1")
    return n


Perturb = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class _Run:
    """What one training run carries from epoch to epoch (and what a checkpoint restores)."""
    net: torch.nn.Module        # the model, BatchNorm synchronised when there are several ranks
    step_fn: torch.nn.Module    # what the batches go through: net, or DDP and/or torch.compile of it
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator        # the permutation and augmentation draws: the same on every rank
    key: str
    history: list[dict]
    best: tuple[tuple[float, ...], dict | None, int]  # score, weights (on the CPU), epoch
    start: int = 0
    select_by: tuple[str, ...] = CLEAN


def fit(
    model: torch.nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    cfg: TrainConfig,
    device: torch.device,
    checkpoint: str | Path | None = None,
    name: str = "model",
    on_epoch: Callable[[dict], None] | None = None,
    select_best: bool = True,
    perturb: Perturb | None = None,
    key_extra: dict | None = None,
    select_by: Sequence[str] = CLEAN,
    monitor: Callable[[torch.nn.Module], dict[str, float]] | None = None,
) -> tuple[torch.nn.Module, list[dict]]:
    """Train `model`; returns it and the per-epoch history.

    `perturb(model, x, y, gen)`, when given, replaces each (augmented) batch by what it returns:
    adversarial training (see `training.adversarial`). `key_extra` describes it (or anything
    else that defines the run) in the checkpoint key, so a clean run is never resumed as another.

    With `select_best` the returned weights are those of the epoch with the best `val`
    accuracy; otherwise the last epoch's (use that when `val` is the test set, which must
    not choose the model). `monitor(net)`, when given, adds columns to each epoch's row (the
    net in eval mode, after validation), and `select_by` names the columns that choose the
    epoch instead (see `score`); a criterion other than the default is part of the run's key.

    `checkpoint` is written after every epoch; if it exists and was written by the same
    configuration and data, training resumes after its last finished epoch.

    Several processes (torchrun): `cfg.batch_size` is the global batch, split over the ranks;
    every rank must call `fit` with the same arguments.
    """
    images, labels = train
    n = len(images)
    if n == 0:
        raise ValueError(f"{name}: empty training set")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    x_all = images_to_device(images, device)
    y_all = torch.as_tensor(labels, dtype=torch.long).to(device)
    model.to(device, memory_format=memory_format(device))
    if tuple(select_by) != CLEAN:  # a resume must keep the criterion its saved best was chosen by
        key_extra = {**(key_extra or {}), "select_by": list(select_by)}
    run = _start(model, images, labels, cfg, device, gen, name, key_extra, math.ceil(n / cfg.batch_size))
    run.select_by = tuple(select_by)
    ckpt_path = Path(checkpoint) if checkpoint else None
    if ckpt_path and ckpt_path.is_file():
        _resume(run, ckpt_path, name)
    dist.check_same(run.start, f"{name}: the epoch resumed after ({ckpt_path})")

    for epoch in range(run.start, cfg.epochs):
        t0 = time.perf_counter()
        # perturb's draws: one process keeps using the run's generator (as it always did); several
        # ranks each need their own, and a per-epoch seed resumes without saving every rank's state
        pgen = run.gen if dist.world_size() == 1 else dist.epoch_generator(cfg.seed, epoch)
        train_loss, train_acc = _train_epoch(run, x_all, y_all, cfg, device, perturb, pgen,
                                             f"{name} {epoch + 1}/{cfg.epochs}")
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(
                f"{name}: non-finite training loss in epoch {epoch + 1} (lr {cfg.lr}); "
                f"the last good checkpoint ({ckpt_path}) is kept. Lower the learning rate or check the data."
            )
        row = _end_epoch(run, epoch, train_loss, train_acc, val, device, select_best, t0, name, cfg.epochs, monitor)
        if ckpt_path and ((epoch + 1) % checkpoint_every() == 0 or epoch + 1 == cfg.epochs):
            _save(run, ckpt_path, epoch + 1)
        if on_epoch:
            on_epoch(row)

    if run.best[1] is not None:
        model.load_state_dict(run.best[1])
    return model.eval(), run.history


def _start(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, device: torch.device,
           gen: torch.Generator, name: str, key_extra: dict | None, steps: int) -> _Run:
    """The optimizer, the schedule and the run's key; the model wrapped for several ranks."""
    net = dist.sync_batchnorm(model, device)  # in place: `model` trains with it
    step_fn = net
    if dist.world_size() > 1:
        # Synchronised BatchNorm keeps the buffers equal on every rank: nothing to broadcast.
        step_fn = dist.ddp(net, device, sync_buffers=False)
    step_fn = torch.compile(step_fn) if cfg.compile else step_fn
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Stepped per batch, so T_0 counts batches and restarts fall on epoch boundaries.
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=cfg.restart_epochs * steps, T_mult=cfg.restart_mult
    )
    # The run is the recipe, the network as built (name, width...) and the exact training data:
    # a checkpoint of the same size but other images (another seed's split) is never resumed.
    # The world size is not part of it: the global batch and the draws are the same at any size.
    build = getattr(model, "build_args", None) or {"name": name, "class": type(model).__name__}
    key = cfg.key({"name": name, "build": build, "data": data_fingerprint(images, labels), **(key_extra or {})})
    return _Run(net, step_fn, opt, sched, gen, key, history=[], best=((), None, 0))


# What _save writes and _resume reads.
_CHECKPOINT_ENTRIES = ("key", "epoch", "model", "opt", "sched", "gen", "cpu_rng", "history",
                       "best_acc", "best_state", "best_epoch")


def _resume(run: _Run, path: Path, name: str) -> None:
    """Every rank loads the same file (rank 0 wrote it, then all met at a barrier)."""
    state = load_checkpoint(path)
    if state.get("key") != run.key:
        if dist.is_main():
            tqdm.write(f"{name}: ignoring {path}, written by another configuration")
        return
    check_entries(state, path, _CHECKPOINT_ENTRIES)
    run.net.load_state_dict(state["model"])
    run.opt.load_state_dict(state["opt"])
    run.sched.load_state_dict(state["sched"])
    run.gen.set_state(state["gen"].cpu())
    torch.set_rng_state(state["cpu_rng"].cpu())
    run.history, run.start, best_epoch = state["history"], state["epoch"], state["best_epoch"]
    best_state = state["best_state"]
    if best_state is None and best_epoch == run.start:  # the best epoch was the saved one
        best_state = {k: t.detach().cpu().clone() for k, t in run.net.state_dict().items()}
    # the best's score, from its history row: the key guarantees the criterion is this run's
    row = next(r for r in run.history if r["epoch"] == best_epoch)
    run.best = (score(row, run.select_by), best_state, best_epoch)
    if dist.is_main():
        tqdm.write(f"{name}: resumed from {path} after epoch {run.start}")


def _train_epoch(run: _Run, x_all: torch.Tensor, y_all: torch.Tensor, cfg: TrainConfig, device: torch.device,
                 perturb: Perturb | None, pgen: torch.Generator, desc: str) -> tuple[float, float]:
    """One pass over the seeded permutation; (mean loss, accuracy) over every image of it."""
    n, world = len(x_all), dist.world_size()
    steps = math.ceil(n / cfg.batch_size)
    run.net.train()
    perm = torch.randperm(n, device=device, generator=run.gen)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    fmt = memory_format(device)
    # 2 s between bar updates keeps logs short; $TQDM_MININTERVAL (tools/gpu_run.sh) overrides it.
    bar = tqdm(range(steps), desc=desc, leave=False, disable=not dist.is_main(),
               mininterval=float(os.environ.get("TQDM_MININTERVAL", 2)))
    for s in bar:
        idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
        xb = x_all[idx]
        # The whole global batch is augmented on every rank, so `gen` advances alike everywhere
        # and each image gets the crop and flip it would get in one process.
        x = augment(xb, gen=run.gen) if cfg.augment else to_float(xb)
        y = y_all[idx]
        if world == 1:
            x = x.contiguous(memory_format=fmt)
            if perturb is not None:
                x = perturb(run.step_fn, x, y, pgen)
            with autocast(device):
                logits = run.step_fn(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            batch_loss, batch_correct = loss.detach() * len(idx), (logits.argmax(1) == y).sum()
        else:
            loss, batch_loss, batch_correct = _shard_step(run, x, y, cfg, device, perturb, pgen)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
        loss_sum += batch_loss
        correct += batch_correct
        if s % 50 == 49:  # one device sync every 50 steps, not every step
            seen = dist.all_reduce_sum(loss_sum.clone())  # every rank must take the same branch
            if not torch.isfinite(seen):
                break
            bar.set_postfix(loss=f"{seen.item() / min(n, (s + 1) * cfg.batch_size):.3f}")
    dist.all_reduce_sum(loss_sum)
    dist.all_reduce_sum(correct)
    return loss_sum.item() / n, correct.item() / n


def _shard_step(run: _Run, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, device: torch.device,
                perturb: Perturb | None, pgen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's part of a global batch: (loss to backpropagate, its loss sum, its correct count).

    The loss is this rank's sum over the global batch size, times the world size, so DDP's mean
    over the ranks is the global batch's mean even when the parts differ by an image. A rank
    whose part is empty (a last batch smaller than the world) runs one image at weight 0: every
    rank must take part in the collectives."""
    global_n, world = len(y), dist.world_size()
    part = dist.shard(global_n)
    weight = 1.0
    if part.start == part.stop:
        part, weight = slice(0, 1), 0.0
    x = x[part].contiguous(memory_format=memory_format(device))
    y = y[part]
    if perturb is not None:
        x = perturb(run.net, x, y, pgen)  # not through DDP: its gradient is the input's alone
    with autocast(device):
        logits = run.step_fn(x)
    total = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing, reduction="sum") * weight
    correct = (logits.argmax(1) == y).sum() * int(weight)
    return total * (world / global_n), total.detach(), correct


def _end_epoch(run: _Run, epoch: int, train_loss: float, train_acc: float, val: tuple[np.ndarray, np.ndarray] | None,
               device: torch.device, select_best: bool, t0: float, name: str, epochs: int,
               monitor: Callable[[torch.nn.Module], dict[str, float]] | None = None) -> dict:
    """Validate, append the epoch's history row, keep the best weights, and log the row."""
    row = {"epoch": epoch + 1, "lr": run.opt.param_groups[0]["lr"], "train_loss": train_loss, "train_acc": train_acc}
    if val is not None:
        v = _evaluate(run.net, val, device)
        row.update(val_loss=v["loss"], val_acc=v["acc"])
    extra = monitor(run.net.eval()) if monitor is not None else {}
    row.update(extra)
    row["seconds"] = time.perf_counter() - t0
    run.history.append(row)
    s = score(row, run.select_by)
    if s > run.best[0] or not select_best:  # strictly better: the first of equal epochs is kept
        run.best = (s, copy.deepcopy({k: t.detach().cpu() for k, t in run.net.state_dict().items()}), epoch + 1)
    if dist.is_main():
        tqdm.write(
            f"{name} epoch {epoch + 1}/{epochs}: loss {train_loss:.4f} train_acc {row['train_acc']:.4f}"
            + (f" val_acc {row['val_acc']:.4f}" if val is not None else "")
            + "".join(f" {k} {v:.4f}" for k, v in extra.items())
            + f" ({row['seconds']:.1f}s)"
        )
    return row


def _evaluate(net: torch.nn.Module, val: tuple[np.ndarray, np.ndarray], device: torch.device) -> dict:
    """Validation loss and accuracy: one process evaluates it all; several split it and sum."""
    if dist.world_size() == 1:
        return evaluate(net, *val, device)
    images, labels = val
    part = dist.shard(len(images))
    logits = predict(net, images[part], device)
    y = torch.as_tensor(labels[part], dtype=torch.long)
    sums = torch.tensor([F.cross_entropy(logits, y, reduction="sum").item() if len(y) else 0.0,
                         float((logits.argmax(1) == y).sum()) if len(y) else 0.0], dtype=torch.float64)
    dist.all_reduce_sum(sums)
    return {"loss": sums[0].item() / len(images), "acc": sums[1].item() / len(images)}


def _save(run: _Run, path: Path, epoch: int) -> None:
    """Rank 0 writes (atomically) what a resume needs and no more: the best weights only when
    they are not these. The barrier: no rank runs ahead of a checkpoint that is not on disk yet."""
    if dist.is_main():
        best_score, best_state, best_epoch = run.best
        save_torch(path, {
            "key": run.key, "epoch": epoch, "model": run.net.state_dict(),
            "opt": run.opt.state_dict(), "sched": run.sched.state_dict(),
            "gen": run.gen.get_state(), "cpu_rng": torch.get_rng_state(), "history": run.history,
            "best_acc": best_score[0], "best_state": None if best_epoch == epoch else best_state, "best_epoch": best_epoch,
        })
    dist.barrier()
