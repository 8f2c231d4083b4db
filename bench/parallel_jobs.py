"""Two networks one after another with every thread, or at once in two processes (`<section>.jobs`).

What train_targets, train_gan and generate_adversarial do with `jobs: 1` and `jobs: 2`
(advhybrid/workers.py), measured on the trainer itself: each network trains `fit` (bf16 where
the CPU has it, channels_last, batch --batch) on synthetic 32x32 images for two epochs of
--steps batches; the second epoch is timed (the first pays for allocation and oneDNN's kernel
choice). Images per second of the pair: all timed images over the sum of the timed epochs
(one after another), or over the span from the first timed epoch's start to the last one's end
(at once: time one network spends alone counts). `wall` is each whole run, worker start-up and
first epochs included: with a few steps it is mostly overhead, not what a stage of hours sees.

    python bench/parallel_jobs.py                                   # ResNet-56 and VGG19_bn at 0.5
    python bench/parallel_jobs.py --nets resnet50:0.25 resnet50:0.25 --steps 20
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the Makefile: spinning threads starve the other process

import numpy as np  # noqa: E402
import torch  # noqa: E402

from advhybrid import workers  # noqa: E402
from advhybrid.models import build_model  # noqa: E402
from advhybrid.training import TrainConfig, fit  # noqa: E402


def train(net: str, steps: int, batch: int) -> dict:
    """One network (`name` or `name:width`), two epochs; its timed epoch's seconds and end."""
    name, _, width = net.partition(":")
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (steps * batch, 32, 32, 3), dtype=np.uint8)
    labels = g.integers(0, 10, steps * batch)
    cfg = TrainConfig(epochs=2, batch_size=batch, restart_epochs=2)
    model = build_model(name, 10, float(width or 1), seed=0)
    _, hist = fit(model, (images, labels), None, cfg, torch.device("cpu"), name=net)
    return {"images": len(images), "seconds": hist[-1]["seconds"], "end": time.time(),
            "threads": torch.get_num_threads()}


def measure(a: argparse.Namespace, jobs: int) -> tuple[dict[str, dict], float, float]:
    """({job: its result}, the pair's images/s over its timed epochs, wall seconds)."""
    t0 = time.perf_counter()
    runs = dict(workers.run(train, {f"{i}:{net}": (net, a.steps, a.batch) for i, net in enumerate(a.nets)}, jobs))
    wall = time.perf_counter() - t0
    images = sum(r["images"] for r in runs.values())
    if jobs == 1:
        span = sum(r["seconds"] for r in runs.values())
    else:
        span = max(r["end"] for r in runs.values()) - min(r["end"] - r["seconds"] for r in runs.values())
    return runs, images / span, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs=2, default=["resnet56", "vgg19bn:0.5"], help="two networks, name[:width]")
    ap.add_argument("--steps", type=int, default=5, help="batches per timed epoch")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)  # the workers get a.threads // 2 each
    load = os.getloadavg()[0]  # other work on the machine skews every figure: said beside the table
    rows = [("one after another", 1, *measure(a, 1)), ("at once (jobs: 2)", 2, *measure(a, 2))]

    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} CPUs; "
          f"torch {torch.__version__}; {a.threads} threads in all; batch {a.batch}, {a.steps} steps timed; "
          f"load average at the start {load:.1f}")
    print(f"# python bench/parallel_jobs.py {' '.join(sys.argv[1:])}".rstrip())
    print("| run | processes | threads each | " + " | ".join(f"{n} images/s" for n in a.nets)
          + " | pair images/s | vs one after another | wall s |")
    print("|---|---|---|" + "---|" * len(a.nets) + "---|---|---|")
    base = rows[0][3]
    for label, procs, runs, pair, wall in rows:
        each = " | ".join(f"{r['images'] / r['seconds']:.1f}" for r in runs.values())
        threads = next(iter(runs.values()))["threads"]
        print(f"| {label} | {procs} | {threads} | {each} | {pair:.1f} | {pair / base:.2f}x | {wall:.0f} |")


if __name__ == "__main__":
    main()
