"""Adversarial examples per second: the GAN generator with its k search vs PGD-10 (torchattacks).

Same target, same images, one run. Uses models/targets/<target>.pt and models/gan/<target>.pt
when the pipeline has produced them, otherwise freshly initialised networks (the table says
which). Success rate is over the images the target classifies correctly; both attacks are
judged on uint8-rounded images, as they would be stored.

    python bench/attack_throughput.py                  # CPU, < 1 minute
    python bench/attack_throughput.py --device cuda --images 2048
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torchattacks

from advhybrid.attacks.advgan import Generator, load_generator, load_target, quantise
from advhybrid.attacks.ksearch import k_grid, run_k_search
from advhybrid.data.subset import stratified_subset
from advhybrid.device import images_to_device, memory_format, pick_device, set_threads, to_float
from advhybrid.io import load_npz
from advhybrid.models import build_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_pgd(target, images, labels, device, batch_size, eps, alpha, steps) -> tuple[int, int, float]:
    """(attacked, fooled, summed Linf of the fooled) over correctly classified images."""
    x_all, y_all = images_to_device(images, device), torch.as_tensor(labels, device=device)
    attacked = fooled = 0
    linf = 0.0
    for i in range(0, len(x_all), batch_size):
        x, y = to_float(x_all[i : i + batch_size]), y_all[i : i + batch_size]
        with torch.no_grad():
            ok = target(x).argmax(1) == y
        x, y = x[ok], y[ok]
        xa = quantise(torchattacks.PGD(target, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y))
        with torch.no_grad():
            hit = target(xa).argmax(1) != y
        attacked, fooled = attacked + len(y), fooled + int(hit.sum())
        linf += float((xa - x)[hit].flatten(1).abs().amax(1).sum()) if hit.any() else 0.0
    return attacked, fooled, linf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="resnet56")
    ap.add_argument("--width", type=float, default=1.0, help="width of a freshly initialised target")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--k", nargs=3, type=float, default=(0.1, 1.0, 0.1), metavar=("MIN", "MAX", "STEP"))
    args = ap.parse_args()
    set_threads()
    device = pick_device(args.device)
    torch.manual_seed(0)

    ckpt, gan = Path(f"models/targets/{args.target}.pt"), Path(f"models/gan/{args.target}.pt")
    if ckpt.is_file():
        target, sha = load_target(ckpt, args.target)
        target_src = f"trained ({ckpt})"
    else:
        target, sha = build_model(args.target, 10, args.width).eval(), None
        target_src = f"freshly initialised, width {args.width:g} (no {ckpt})"
    if gan.is_file() and sha is not None:
        G, _ = load_generator(gan, args.target, sha)
        gen_src = f"trained ({gan})"
    else:
        G = Generator().eval()
        gen_src = f"freshly initialised (no {gan} for this target checkpoint)"
    fmt = memory_format(device)
    target = target.to(device, memory_format=fmt).requires_grad_(False)
    G = G.to(device, memory_format=fmt)

    data = Path("data/raw/cifar10/test.npz")
    if data.is_file():
        d = load_npz(data, ["images", "labels"])
        idx = stratified_subset(d["labels"], args.images, seed=0)  # the split is stored class by class
        images, labels, data_src = d["images"][idx], d["labels"][idx], f"{data} (class-stratified)"
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
        labels, data_src = rng.integers(0, 10, args.images), "uniform noise (no CIFAR-10 test.npz)"
    if sha is None:
        # An untrained net with BatchNorm's initial statistics answers one class whatever the
        # input; statistics from these images make it input-sensitive. Its own predictions as
        # labels give every image something to attack, so both attacks time the full batch.
        x = to_float(images_to_device(images, device))
        with torch.no_grad():
            for m in target.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.momentum = None
            target.train()(x)
            labels = target.eval()(x).argmax(1).cpu().numpy()
        data_src += ", labelled with the untrained target's own predictions"
    grid = k_grid(*args.k, where="--k")

    print(f"device {device}; target {args.target}: {target_src}")
    print(f"generator: {gen_src}\nimages: {len(images)} from {data_src}")
    # Warm-up on a few images: first calls pay for allocation and kernel selection.
    run_k_search(target, G, images[:8], labels[:8], grid, device, args.batch_size)
    run_pgd(target, images[:8], labels[:8], device, args.batch_size, 8 / 255, 2 / 255, 1)

    rows = []
    sync(device)
    t0 = time.perf_counter()
    r = run_k_search(target, G, images, labels, grid, device, args.batch_size, desc="gan")
    sync(device)
    dt = time.perf_counter() - t0
    linf = np.abs(r.images.astype(np.int16) - images[r.index].astype(np.int16)).max(axis=(1, 2, 3)) / 255
    rows.append((f"GAN + k search ({len(grid)} k)", len(images) / dt, len(r.k) / max(r.n_attacked, 1),
                 linf.mean() if len(linf) else float("nan")))

    sync(device)
    t0 = time.perf_counter()
    attacked, fooled, linf_sum = run_pgd(target, images, labels, device, args.batch_size, 8 / 255, 2 / 255, 10)
    sync(device)
    dt = time.perf_counter() - t0
    rows.append(("PGD-10 (eps 8/255, step 2/255)", len(images) / dt, fooled / max(attacked, 1),
                 linf_sum / fooled if fooled else float("nan")))

    print(f"\n{'method':<32} {'images/s':>10} {'success':>8} {'mean Linf':>10}")
    for name, ips, rate, li in rows:
        li = f"{li * 255:.2f}/255" if np.isfinite(li) else "-"
        print(f"{name:<32} {ips:>10.1f} {rate:>8.3f} {li:>10}")
    print(f"(success over the {r.n_attacked} correctly classified images; Linf of the successful ones)")


if __name__ == "__main__":
    main()
