"""The GAN attack of section II-B: a generator maps a clean image and a target label to a
bounded perturbation.

x_adv = clip(x + k * G(x, t), 0, 1)   (eq. 1), ||G(x, t)||_inf <= eps by construction.
t is the target's second most likely class for x (the paper's target label, II-A: "G leverages
a clean image x and a target class label t as inputs"); G sees t as ten one-hot planes.
G is trained AdvGAN-style against one frozen target classifier C:
  D learns clean -> 1, adversarial -> 0 (updated every `d_every` generator steps);
  G minimises  w_gan * GAN(D(x_adv), 1)                              (look clean to D)
             + w_adv * attack margin (C-W, floored at -kappa)        (see `attack_loss`)
             + w_hinge * max(0, ||G(x, t)||_2 - c)                   (keep the L2 energy under c)
Why conditioning matters (docs/results.md, bench/gan_ablation.py): an unconditioned G learns
one nearly image-independent pattern, which fools many images but cannot steer each to its own t.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from advhybrid import dist
from advhybrid.device import autocast, images_to_device, memory_format, to_float
from advhybrid.io import check_entries, data_fingerprint, load_checkpoint, save_torch, sha256_file
from advhybrid.params import ParamsError, Section


class GeneratorMismatchError(ValueError):
    """A generator file was trained against another target (name or checkpoint hash differ)."""


# ----------------------------------------------------------------------------- networks


def _norm_relu(c: int) -> list[nn.Module]:
    # InstanceNorm, not BatchNorm: a perturbation must not depend on the rest of the batch,
    # or the k search over a batch and the stored image would disagree.
    return [nn.InstanceNorm2d(c, affine=True), nn.ReLU(inplace=True)]


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), *_norm_relu(cout)]


def _up(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), *_norm_relu(cout)]


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(*_conv(c, c), *_conv(c, c)[:-1])  # conv-norm-relu-conv-norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


OUTPUTS = ("tanh", "hardtanh")
NUM_CLASSES = 10


class Generator(nn.Module):
    """Encoder (32 -> 8), residual bottleneck, decoder (8 -> 32); output in [-eps, eps].

    `num_classes` > 0 conditions G on the target label t (one-hot planes beside the image);
    0 gives the unconditioned G(x) of the earlier recipe. `output` bounds the raw map:
    eps * tanh (smooth) or eps * hardtanh (exactly eps once past 1, no vanishing gradient inside).
    """

    def __init__(self, eps: float = 8 / 255, width: int = 32, n_res: int = 4, num_classes: int = 10,
                 output: str = "tanh"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"generator output must be one of {OUTPUTS}, got {output!r}")
        w = width
        self.eps, self.width, self.n_res = float(eps), width, n_res
        self.num_classes, self.output = int(num_classes), output
        self.net = nn.Sequential(
            *_conv(3 + self.num_classes, w), *_conv(w, 2 * w, 2), *_conv(2 * w, 4 * w, 2),
            *[ResBlock(4 * w) for _ in range(n_res)],
            *_up(4 * w, 2 * w), *_up(2 * w, w),
            nn.Conv2d(w, 3, 3, 1, 1),
        )

    @property
    def arch(self) -> dict[str, Any]:
        return {"eps": self.eps, "width": self.width, "n_res": self.n_res,
                "num_classes": self.num_classes, "output": self.output}

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if t is None:
                raise ValueError("this generator is conditioned on the target label: call G(x, t)")
            planes = F.one_hot(t, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], 1)
        z = self.net(x)
        return self.eps * (torch.tanh(z) if self.output == "tanh" else F.hardtanh(z))


class Discriminator(nn.Module):
    """PatchGAN: one clean-vs-adversarial logit per 4x4 patch of the 32x32 input."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        lrelu = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), lrelu(),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.InstanceNorm2d(2 * w, affine=True), lrelu(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.InstanceNorm2d(4 * w, affine=True), lrelu(),
            nn.Conv2d(4 * w, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def apply_perturbation(x: torch.Tensor, delta: torch.Tensor, k: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Eq. (1), clipped to the valid image range."""
    return (x + k * delta).clamp(0, 1)


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Snap to the uint8 grid, so what the target sees is exactly what gets stored."""
    return x.mul(255).round_().div_(255)


def second_class(logits: torch.Tensor) -> torch.Tensor:
    """The target label t: the most likely class after the top one."""
    return logits.topk(2, dim=1).indices[:, 1]


@torch.no_grad()
def predict_top2(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1, top-2) classes of uint8 NHWC `images` already on `device`."""
    top1, top2 = [], []
    for i in range(0, len(images), batch_size):
        with autocast(device):
            logits = model(to_float(images[i : i + batch_size])).float()
        top = logits.topk(2, dim=1).indices
        top1.append(top[:, 0]), top2.append(top[:, 1])
    empty = torch.empty(0, dtype=torch.long, device=device)
    return (torch.cat(top1), torch.cat(top2)) if top1 else (empty, empty)


# ----------------------------------------------------------------------------- losses


def gan_loss(logits: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    logits = logits.float()
    if kind == "lsgan":
        return (logits - float(real)).square().mean()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def margin_loss(logits: torch.Tensor, t: torch.Tensor, kappa: float) -> torch.Tensor:
    """C-W targeted margin: zero once class t leads every other class by kappa."""
    logits = logits.float()
    z_t = logits.gather(1, t[:, None]).squeeze(1)
    z_other = logits.masked_fill(F.one_hot(t, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (z_other - z_t).clamp_min(-kappa).mean()


def untargeted_margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """C-W untargeted margin: zero once some wrong class leads the true class y by kappa."""
    logits = logits.float()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (z_y - z_other).clamp_min(-kappa).mean()


OBJECTIVES = ("targeted", "untargeted", "both")


def attack_loss(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor, objective: str, kappa: float) -> torch.Tensor:
    """The adversarial term: toward t (the paper's target label), away from y (the paper's
    success criterion, II-B step 3: any wrong label), or the sum of both."""
    loss = logits.new_zeros((), dtype=torch.float32)
    if objective in ("targeted", "both"):
        loss = loss + margin_loss(logits, t, kappa)
    if objective in ("untargeted", "both"):
        loss = loss + untargeted_margin_loss(logits, y, kappa)
    return loss


def hinge_loss(delta: torch.Tensor, bound: float) -> torch.Tensor:
    return (delta.float().flatten(1).norm(dim=1) - bound).clamp_min(0).mean()


# ----------------------------------------------------------------------------- config


GAN_LOSSES = ("lsgan", "bce")
SCHEDULES = ("constant", "onecycle")


@dataclass(frozen=True)
class GanConfig:
    eps: float = 8 / 255
    conditional: bool = True      # G(x, t), as the paper describes G; False: G(x)
    output: str = "tanh"
    gen_width: int = 32
    gen_res_blocks: int = 4
    disc_width: int = 32
    gan_loss: str = "lsgan"
    epochs: int = 60
    batch_size: int = 128
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    schedule: str = "constant"    # generator lr: constant, or one cycle over the whole run
    beta1: float = 0.5
    beta2: float = 0.999
    objective: str = "both"
    w_gan: float = 1.0            # 0 turns the discriminator off (an ablation, not the method)
    d_every: int = 1              # discriminator updates: one per d_every generator steps
    w_adv: float = 10.0
    w_hinge: float = 1.0
    kappa: float = 0.0
    hinge_bound: float = 1.0
    log_every: int = 50
    seed: int = 0

    @classmethod
    def from_params(cls, p: Section) -> "GanConfig":
        """Read the `gan` section; eps is given in 1/255 units (`eps_255: 8`) to stay exact in YAML."""
        ints = ("gen_width", "gen_res_blocks", "disc_width", "epochs", "batch_size", "log_every", "seed",
                "d_every")
        floats = ("lr_g", "lr_d", "beta1", "beta2", "w_gan", "w_adv", "w_hinge", "kappa", "hinge_bound")
        strs = ("gan_loss", "output", "schedule", "objective")
        cfg = cls(
            eps=p.typed("eps_255", float) / 255,
            conditional=p.typed("conditional", bool),
            **{k: p.typed(k, str) for k in strs},
            **{k: p.typed(k, int) for k in ints},
            **{k: p.typed(k, float) for k in floats},
        )
        cfg.check(f"{p.source}: '{p.name}.")
        return cfg

    def check(self, where: str = "gan config: '") -> None:
        for key, allowed in (("gan_loss", GAN_LOSSES), ("output", OUTPUTS), ("schedule", SCHEDULES),
                             ("objective", OBJECTIVES)):
            if getattr(self, key) not in allowed:
                raise ParamsError(f"{where}{key}' must be one of {allowed}, got {getattr(self, key)!r}")
        for k in ("gen_width", "disc_width", "epochs", "batch_size", "log_every", "d_every"):
            if getattr(self, k) < 1:
                raise ParamsError(f"{where}{k}' must be >= 1, got {getattr(self, k)}")
        for k in ("lr_g", "lr_d"):
            if not getattr(self, k) > 0:
                raise ParamsError(f"{where}{k}' must be > 0, got {getattr(self, k)}")
        for k in ("w_gan", "w_adv", "w_hinge", "kappa", "hinge_bound"):
            if not getattr(self, k) >= 0:
                raise ParamsError(f"{where}{k}' must be >= 0, got {getattr(self, k)}")
        if not 0 < self.eps <= 1:
            raise ParamsError(f"{where}eps_255' must be in (0, 255], got {self.eps * 255:g}")

    def key(self, *extra: str) -> str:
        """Hash of what defines a run (config, target, data). With a constant learning rate,
        `epochs` is left out: each epoch's shuffle is seeded by its index, so a run resumed with
        more epochs is identical to a longer run from scratch. A one-cycle schedule spans the
        whole run, so there `epochs` is part of the key."""
        fields = asdict(self) | ({"epochs": None} if self.schedule == "constant" else {})
        blob = json.dumps(fields, sort_keys=True) + "|".join(extra)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- training


def _perturb(G: nn.Module, x: torch.Tensor, t: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast(device):
        delta = G(x, t)
        return delta, apply_perturbation(x, delta)


def _g_losses(d_net: nn.Module, target: nn.Module, x_adv: torch.Tensor, delta: torch.Tensor, y: torch.Tensor,
              t: torch.Tensor, cfg: GanConfig, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Eq. 1 for G: its GAN, adversarial and hinge terms, and their weighted sum."""
    with autocast(device):
        g_gan = gan_loss(d_net(x_adv), True, cfg.gan_loss) if cfg.w_gan > 0 else torch.zeros((), device=x_adv.device)
        g_adv = attack_loss(target(x_adv), y, t, cfg.objective, cfg.kappa)
        g_hinge = hinge_loss(delta, cfg.hinge_bound)
        return g_gan, g_adv, g_hinge, cfg.w_gan * g_gan + cfg.w_adv * g_adv + cfg.w_hinge * g_hinge


def _gan_step(G, D, target, x, y, t, cfg: GanConfig, opt_g, opt_d, device, update_d: bool) -> torch.Tensor:
    delta, x_adv = _perturb(G, x, t, device)
    d_loss = torch.zeros((), device=x.device)
    if cfg.w_gan > 0 and update_d:
        with autocast(device):
            d_loss = gan_loss(D(x), True, cfg.gan_loss) + gan_loss(D(x_adv.detach()), False, cfg.gan_loss)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

    g_gan, g_adv, g_hinge, g_loss = _g_losses(D, target, x_adv, delta, y, t, cfg, device)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return torch.stack([d_loss.float(), g_gan.float(), g_adv.float(), g_hinge.float()]).detach()


def _gan_step_shard(G, D, target, x, y, t, cfg: GanConfig, opt_g, opt_d, device, update_d: bool,
                    share: float) -> torch.Tensor:
    """`_gan_step` for this rank's part of a global batch, G and D wrapped in DDP.

    DDP wants one forward per backward, so D sees the clean and adversarial images in one call
    (InstanceNorm normalises each image alone: the same as two calls); G's step goes through the
    bare D with its parameters frozen, so only G's gradients are reduced then. The losses are
    means over this rank's part; `share` (its size times the world size over the global batch's)
    makes DDP's mean over the ranks the global batch's mean."""
    delta, x_adv = _perturb(G, x, t, device)
    d_loss = torch.zeros((), device=x.device)
    if cfg.w_gan > 0 and update_d:
        with autocast(device):
            real, fake = D(torch.cat([x, x_adv.detach()])).chunk(2)
            d_loss = gan_loss(real, True, cfg.gan_loss) + gan_loss(fake, False, cfg.gan_loss)
        opt_d.zero_grad(set_to_none=True)
        (d_loss * share).backward()
        opt_d.step()

    bare_d = D.module
    bare_d.requires_grad_(False)
    g_gan, g_adv, g_hinge, g_loss = _g_losses(bare_d, target, x_adv, delta, y, t, cfg, device)
    opt_g.zero_grad(set_to_none=True)
    (g_loss * share).backward()
    opt_g.step()
    bare_d.requires_grad_(True)
    return torch.stack([d_loss.float(), g_gan.float(), g_adv.float(), g_hinge.float()]).detach() * share


LOSS_NAMES = ("d_loss", "g_gan", "g_adv", "g_hinge")


def train_generator(
    target: nn.Module,
    images_u8: np.ndarray,
    labels: np.ndarray,
    cfg: GanConfig,
    device: torch.device,
    checkpoint: str | os.PathLike | None = None,
    run_key: str = "",
    desc: str = "gan",
) -> tuple[Generator, list[dict[str, Any]]]:
    """Train G (and D) against the frozen `target`; return G in eval mode and the loss history.

    `checkpoint`, when given, is written atomically after every epoch and resumed from when its
    key (config + `run_key` + data fingerprint) matches; a stale one is ignored and overwritten.
    Several processes (torchrun, `advhybrid.dist`): every rank draws the same permutation and
    trains on its own part of each global batch of `cfg.batch_size`; DDP averages G's and D's
    gradients; rank 0 writes the checkpoint and every rank resumes from it.
    History rows: step, epoch, lr_g, d_loss, g_gan, g_adv, g_hinge (means over `cfg.log_every` steps).
    """
    fmt = memory_format(device)
    target = target.to(device, memory_format=fmt).eval().requires_grad_(False)
    x_all = images_to_device(images_u8, device)
    y_all = torch.as_tensor(labels, dtype=torch.long, device=device)
    # Only images the target gets right: t is "the most likely wrong class" only when the top-1
    # class is the true one. On a misclassified image the top-2 class is often the true label,
    # and chasing it would teach G to repair the target's mistakes. The k search skips them too.
    pred, t_all = predict_top2(target, x_all, device)
    keep = pred == y_all
    if not keep.any():
        raise ValueError(f"{desc}: the target classifies none of the {len(x_all)} training images correctly")
    x_all, y_all, t_all = x_all[keep], y_all[keep], t_all[keep]
    n = len(x_all)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size

    torch.manual_seed(cfg.seed)
    G = Generator(cfg.eps, cfg.gen_width, cfg.gen_res_blocks, NUM_CLASSES if cfg.conditional else 0,
                  cfg.output).to(device, memory_format=fmt)
    D = Discriminator(cfg.disc_width).to(device, memory_format=fmt)
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt_g, cfg.lr_g, total_steps=cfg.epochs * steps_per_epoch)
             if cfg.schedule == "onecycle" else None)

    key = cfg.key(run_key, data_fingerprint(images_u8, labels))
    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt)
        ours = state.get("key") == key
        if ours:
            check_entries(state, ckpt, ("epoch", "history", "G", "D", "opt_g", "opt_d", "sched"))
        if ours and state["epoch"] <= cfg.epochs:
            G.load_state_dict(state["G"]), D.load_state_dict(state["D"])
            opt_g.load_state_dict(state["opt_g"]), opt_d.load_state_dict(state["opt_d"])
            if sched is not None:
                sched.load_state_dict(state["sched"])
            start, history = state["epoch"], state["history"]
            if dist.is_main():
                print(f"{desc}: resuming from {ckpt} after epoch {start}/{cfg.epochs}")
        elif dist.is_main():
            print(f"{desc}: ignoring {ckpt} (another config, target or data, or more epochs than asked)")

    dist.check_same(start, f"{desc}: the epoch resumed after ({ckpt})")
    world = dist.world_size()
    if world > 1:
        G_ddp, D_ddp = dist.ddp(G, device), dist.ddp(D, device)
    step = start * steps_per_epoch
    G.train(), D.train()
    for epoch in range(start, cfg.epochs):
        # Per-epoch seeded order: a resumed run shuffles exactly as an uninterrupted one.
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)).to(device)
        acc, since = torch.zeros(len(LOSS_NAMES), device=device), 0
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not dist.is_main())
        for i in bar:
            idx = perm[i : i + cfg.batch_size]
            lr_g = opt_g.param_groups[0]["lr"]  # the lr this step uses
            if world == 1:
                acc += _gan_step(G, D, target, to_float(x_all[idx]), y_all[idx], t_all[idx], cfg, opt_g, opt_d,
                                 device, update_d=step % cfg.d_every == 0)
            else:
                part = dist.shard(len(idx))
                share = (part.stop - part.start) * world / len(idx)
                mine = idx[part] if part.stop > part.start else idx[:1]  # an empty part runs one image at weight 0
                acc += _gan_step_shard(G_ddp, D_ddp, target, to_float(x_all[mine]), y_all[mine], t_all[mine], cfg,
                                       opt_g, opt_d, device, update_d=step % cfg.d_every == 0, share=share)
            step, since = step + 1, since + 1
            if sched is not None and step < cfg.epochs * steps_per_epoch:  # past the end it would wrap
                sched.step()
            if since == cfg.log_every or i + cfg.batch_size >= n:  # one .tolist() sync per window
                window = acc / since if world == 1 else dist.all_reduce_sum(acc.clone()) / (since * world)
                row = dict(zip(LOSS_NAMES, window.tolist()))
                history.append({"step": step, "epoch": epoch + 1, "lr_g": lr_g, **row})
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items()})
                acc.zero_()
                since = 0
        if ckpt is not None:
            if dist.is_main():
                save_torch(ckpt, {
                    "key": key, "epoch": epoch + 1, "history": history,
                    "G": G.state_dict(), "D": D.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                    "sched": sched.state_dict() if sched is not None else None,
                })
            dist.barrier()  # no rank starts an epoch whose predecessor's checkpoint is not on disk
    return G.eval(), history


# ----------------------------------------------------------------------------- files


def load_target(path: str | os.PathLike, name: str, map_location: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """Load a target classifier checkpoint; return (model in eval mode, sha256 of the file)."""
    from advhybrid.models import load_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no target checkpoint for '{name}' (run the train_targets stage)")
    try:
        model, info = load_model(path, map_location=map_location)
    except Exception as e:
        raise ValueError(f"{path}: cannot load the target checkpoint for '{name}' ({e})") from e
    if info.get("name") != name:
        raise ValueError(f"{path}: holds a '{info.get('name')}' model, expected target '{name}'")
    return model.eval(), sha256_file(path)


def save_generator(path: str | os.PathLike, G: Generator, target: str, target_sha256: str, **meta: Any) -> None:
    save_torch(path, {
        "state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()},
        "arch": G.arch,
        "target": target, "target_sha256": target_sha256, "meta": meta,
    })


def load_generator(
    path: str | os.PathLike, target: str, target_sha256: str | None, map_location: str | torch.device = "cpu"
) -> tuple[Generator, dict[str, Any]]:
    """Load a generator, refusing one trained against another target or target checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no generator for target '{target}' (run the train_gan stage)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        arch = state["arch"]
        G = Generator(arch["eps"], arch["width"], arch["n_res"], arch.get("num_classes", 0),
                      arch.get("output", "tanh"))
        G.load_state_dict(state["state_dict"])
    except Exception as e:
        raise ValueError(f"{path}: cannot load the generator for '{target}' ({type(e).__name__}: {e})") from e
    if state.get("target") != target:
        raise GeneratorMismatchError(
            f"{path}: generator was trained against target '{state.get('target')}', not '{target}'"
        )
    if target_sha256 is not None and state.get("target_sha256") != target_sha256:
        raise GeneratorMismatchError(
            f"{path}: generator was trained against a '{target}' checkpoint with sha256 "
            f"{str(state.get('target_sha256'))[:12]}..., but the current one has {target_sha256[:12]}... "
            "(retrain it: dvc repro train_gan)"
        )
    return G.eval(), state
