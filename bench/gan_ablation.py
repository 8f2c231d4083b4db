"""Which parts of the GAN attack's recipe buy success: one change at a time, against one target.

Each row trains one generator with the reference scale's GAN settings (conf/config.yaml's `gan`
section under conf/scale/reference.yaml), changed only where the row says, for the same number of
optimiser steps, and reports success at k = 1 (L-inf <= 8/255, after rounding to uint8) on
held-out test images the target gets right: untargeted (any wrong label), targeted (the target's
second class t), the mean cosine similarity of G(x, t) between images (1 = one universal
pattern), mean L2, and seconds. One-step FGSM at the same budget is printed as a yardstick.

The target is models/targets/<name>.pt when the pipeline has made it; otherwise a stand-in of
the same architecture and reference width is trained here (the project's trainer, a few epochs)
and cached under checkpoints/bench/, so the bench runs on a fresh clone.

    python bench/gan_ablation.py                       # the default rows, about 15 minutes here
    python bench/gan_ablation.py --rows base,no-disc --steps 1000   # row ids: see ROWS
    python bench/gan_ablation.py --extra 'kappa=20,w_gan=0.3'
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch
import yaml

from advhybrid.attacks.advgan import GanConfig, load_target, train_generator
from advhybrid.attacks.ksearch import evaluate_at_k
from advhybrid.data.subset import stratified_subset
from advhybrid.device import pick_device, set_threads
from advhybrid.io import load_npz, save_text
from advhybrid.models import build_model, save_model
from advhybrid.params import Section
from advhybrid.training import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]

# id -> (what the row tests, changes to the base recipe, CPU bf16 on/off or None for the default)
ROWS: dict[str, tuple[str, str, bool | None]] = {
    "previous": ("the previous recipe: G(x), targeted margin k=0 x10, hinge c=1, D w=1, constant lr",
                 "conditional=False,objective=targeted,kappa=0,w_adv=10,w_hinge=1,hinge_bound=1.0,w_gan=1,"
                 "schedule=constant", None),
    "base": ("the base recipe (conf/config.yaml + reference scale)", "", None),
    "uncond": ("unconditioned G(x)", "conditional=False", None),
    "targeted": ("targeted margin only", "objective=targeted", None),
    "untargeted": ("untargeted margin only", "objective=untargeted", None),
    "kappa0": ("kappa 0", "kappa=0", None),
    "kappa20": ("kappa 20", "kappa=20", None),
    "no-hinge": ("no L2 hinge", "w_hinge=0", None),
    "no-disc": ("no discriminator", "w_gan=0", None),
    "wgan1": ("GAN weight 1", "w_gan=1", None),
    "wgan1-d5": ("GAN weight 1, D updated every 5 steps", "w_gan=1,d_every=5", None),
    "hardtanh": ("hardtanh output", "output=hardtanh", None),
    "constant-lr": ("constant generator lr", "schedule=constant", None),
    "lr1e-3": ("generator lr 1e-3", "lr_g=0.001", None),
    "fp32": ("fp32 (no bf16 autocast)", "", False),
}


def base_config() -> tuple[GanConfig, dict]:
    """The reference scale's `gan` section, composed the way Hydra does for this one section."""
    conf = yaml.safe_load((ROOT / "conf/config.yaml").read_text())["gan"]
    conf.update(yaml.safe_load((ROOT / "conf/scale/reference.yaml").read_text()).get("gan", {}))
    return GanConfig.from_params(Section(conf, "gan", "conf/ (reference scale)")), conf


def parse_changes(base: GanConfig, spec: str) -> GanConfig:
    """'kappa=20,w_gan=0' -> base with those fields replaced, typed as in GanConfig."""
    types = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(base)}
    changes = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"{spec!r}: unknown GAN setting {key!r} (known: {', '.join(types)})")
        changes[key] = (value.lower() in ("1", "true", "yes")) if types[key] is bool else types[key](value)
    cfg = dataclasses.replace(base, **changes)
    cfg.check()
    return cfg


def get_target(name: str, train: dict, test: dict, epochs: int, images: int, device) -> tuple[torch.nn.Module, str]:
    path = ROOT / f"models/targets/{name}.pt"
    if path.is_file():
        return load_target(path, name)[0], str(path.relative_to(ROOT))
    ref = yaml.safe_load((ROOT / "conf/scale/reference.yaml").read_text())["targets"]
    width = ref["width"][name] if isinstance(ref["width"], dict) else ref["width"]
    cache = ROOT / f"checkpoints/bench/target_{name}_w{width}_e{epochs}_n{images}.pt"
    if not cache.is_file():
        tr = stratified_subset(train["labels"], images, 0)
        cfg = TrainConfig(epochs=epochs, lr=0.002, restart_epochs=epochs, label_smoothing=0.1)
        model, _ = fit(build_model(name, 10, width, seed=0), (train["images"][tr], train["labels"][tr]), None,
                       cfg, device, name=f"stand-in {name}", select_best=False)
        save_model(cache, model, name, 10, width)
    return load_target(cache, name)[0], f"stand-in trained here ({cache.relative_to(ROOT)})"


def fgsm_success(target, images, labels, eps: float, device) -> float:
    from advhybrid.device import images_to_device, to_float

    x = to_float(images_to_device(images, device)).requires_grad_(True)
    y = torch.as_tensor(labels, device=device)
    logits = target(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    ok = logits.argmax(1) == y
    with torch.no_grad():
        fooled = target((x + eps * x.grad.sign()).clamp(0, 1).mul(255).round().div(255)).argmax(1) != y
    return float((fooled & ok).sum() / ok.sum())


def run_row(target, train_xy, test_xy, cfg: GanConfig, bf16: bool | None, device) -> dict:
    old = os.environ.get("ADVHYBRID_CPU_BF16")
    if bf16 is not None:
        os.environ["ADVHYBRID_CPU_BF16"] = "1" if bf16 else "0"
    try:
        t0 = time.perf_counter()
        G, history = train_generator(target, *train_xy, cfg, device, desc="ablation")
        m = evaluate_at_k(target, G, *test_xy, 1.0, device)
        return {**m, "steps": history[-1]["step"], "seconds": time.perf_counter() - t0}
    finally:
        if old is None:
            os.environ.pop("ADVHYBRID_CPU_BF16", None)
        else:
            os.environ["ADVHYBRID_CPU_BF16"] = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="vgg19bn")
    ap.add_argument("--steps", type=int, default=400, help="generator steps per row (batch size from the recipe)")
    ap.add_argument("--images", type=int, default=8000, help="GAN training images (the target's correct ones are used)")
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--target-epochs", type=int, default=3, help="stand-in target: epochs")
    ap.add_argument("--target-images", type=int, default=20000, help="stand-in target: training images")
    ap.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    ap.add_argument("--extra", action="append", default=[], help="extra rows: changes to the base, as k=v,k=v")
    ap.add_argument("--out", default="bench/out/gan_ablation.md")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    set_threads()
    device = pick_device(args.device)
    train = load_npz(ROOT / "data/raw/cifar10/train.npz", ["images", "labels"])
    test = load_npz(ROOT / "data/raw/cifar10/test.npz", ["images", "labels"])
    target, origin = get_target(args.target, train, test, args.target_epochs, args.target_images, device)
    target = target.to(device).eval().requires_grad_(False)

    # GAN images: a stratified subset disjoint from nothing in particular (the target was trained
    # on the train split too, as in the pipeline); evaluation on held-out test images.
    tr = stratified_subset(train["labels"], args.images, 1)
    te = stratified_subset(test["labels"], args.eval_images, 0)
    train_xy, test_xy = (train["images"][tr], train["labels"][tr]), (test["images"][te], test["labels"][te])
    base, _ = base_config()
    with torch.no_grad():
        from advhybrid.training import predict
        n_correct = int((predict(target, train_xy[0], device).argmax(1).numpy() == train_xy[1]).sum())
    # Epochs so that every row takes about --steps generator steps on the images the target gets right.
    per_epoch = -(-n_correct // base.batch_size)
    epochs = max(1, round(args.steps / per_epoch))

    rows = dict(ROWS)
    for i, spec in enumerate(args.extra):
        rows[f"extra{i + 1}"] = (spec, spec, None)
    chosen = [r.strip() for r in args.rows.split(",")] if args.rows else list(rows)
    unknown = [r for r in chosen if r not in rows]
    if unknown:
        raise SystemExit(f"--rows: unknown row(s) {unknown}; known: {list(rows)}")

    acc = float((predict(target, test_xy[0], device).argmax(1).numpy() == test_xy[1]).mean())
    head = [
        f"target: {args.target}, {origin}; clean accuracy {acc:.3f} on {len(te)} test images",
        f"base: the reference recipe's gan section; {epochs} epochs x {per_epoch} steps of {base.batch_size} "
        f"on the {n_correct} of {len(tr)} training images the target gets right; device {device}",
        f"FGSM (one gradient step, eps 8/255): untargeted {fgsm_success(target, *test_xy, 8 / 255, device):.3f}",
        "",
        "| row | what it tests | changes | steps | untargeted @k=1 | targeted @k=1 | cos G(x,t) | mean L2 | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(head), flush=True)
    lines = list(head)
    for name in chosen:
        what, spec, bf16 = rows[name]
        cfg = dataclasses.replace(parse_changes(base, spec), epochs=epochs)
        m = run_row(target, train_xy, test_xy, cfg, bf16, device)
        change = (spec or "none") + ("" if bf16 is None else f"; ADVHYBRID_CPU_BF16={int(bf16)}")
        line = (f"| {name} | {what} | {change} | {m['steps']} | {m['untargeted_success']:.3f} | {m['targeted_success']:.3f} "
                f"| {m['perturbation_cosine']:.2f} | {m['mean_l2']:.2f} | {m['seconds']:.0f} |")
        print(line, flush=True)
        lines.append(line)
    save_text(ROOT / args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
