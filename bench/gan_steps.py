"""How the GAN attack's success grows with training: batch size, generator lr and epochs.

Trains one generator per setting against a trained target (models/targets/<t>.pt) on a
class-stratified training subset and reports success at k = 1 on held-out test images, beside
one-step FGSM at the same L-inf budget (what a gradient, rather than a generator, gets).
This is the probe behind the reference scale's GAN settings (docs/results.md).

    python bench/gan_steps.py --target vgg19bn --images 5000 \\
        --set epochs=1 --set epochs=1,batch_size=32 --set epochs=5,batch_size=32
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from advhybrid.attacks.advgan import GanConfig, load_target, train_generator
from advhybrid.attacks.ksearch import evaluate_at_k
from advhybrid.data.subset import stratified_subset
from advhybrid.device import images_to_device, pick_device, set_threads, to_float
from advhybrid.io import load_npz
from gan_ablation import parse_changes  # bench/ is on sys.path when this script runs


def fgsm_success(target, images, labels, eps: float, device) -> float:
    x = to_float(images_to_device(images, device)).requires_grad_(True)
    y = torch.as_tensor(labels, device=device)
    logits = target(x)
    F.cross_entropy(logits, y).backward()
    ok = logits.argmax(1) == y
    with torch.no_grad():
        fooled = target((x + eps * x.grad.sign()).clamp(0, 1)).argmax(1) != y
    return float((fooled & ok).sum() / ok.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="vgg19bn")
    ap.add_argument("--images", type=int, default=5000, help="training images (the target's correct ones are used)")
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--set", action="append", default=None, help="GanConfig overrides, comma-separated")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    set_threads()
    device = pick_device(args.device)
    train = load_npz("data/raw/cifar10/train.npz", ["images", "labels"])
    test = load_npz("data/raw/cifar10/test.npz", ["images", "labels"])
    tr, te = stratified_subset(train["labels"], args.images, 0), stratified_subset(test["labels"], args.eval_images, 0)
    target, _ = load_target(f"models/targets/{args.target}.pt", args.target)
    # The reference scale's generator; each --set changes only what it names.
    base = GanConfig(gen_width=16, gen_res_blocks=2, disc_width=16)
    print(f"# target {args.target}, {args.images} training images, {len(te)} test images, device {device}")
    print(f"FGSM (eps 8/255, one gradient step): untargeted {fgsm_success(target, test['images'][te], test['labels'][te], 8 / 255, device):.3f}")
    print("| setting | steps | untargeted @k=1 | targeted @k=1 | mean L2 | seconds |")
    print("|---|---|---|---|---|---|")
    for spec in args.set or ["epochs=1", "epochs=1,batch_size=32", "epochs=5,batch_size=32", "epochs=3,batch_size=32,lr_g=0.003"]:
        cfg = parse_changes(base, spec)
        t0 = time.perf_counter()
        G, history = train_generator(target, train["images"][tr], train["labels"][tr], cfg, device, desc=spec)
        m = evaluate_at_k(target, G, test["images"][te], test["labels"][te], 1.0, device)
        print(f"| {spec} | {history[-1]['step']} | {m['untargeted_success']:.3f} | {m['targeted_success']:.3f} "
              f"| {m['mean_l2']:.2f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
