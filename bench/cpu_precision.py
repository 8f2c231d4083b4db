"""Training images per second on the CPU: fp32 vs channels_last vs channels_last + bf16 autocast.

Why the device module picks channels_last everywhere and bf16 autocast on CPUs with native bf16
(AVX512-BF16/AMX): measure it on the machine at hand, per model and width.

    python bench/cpu_precision.py                         # the reference scale's widths
    python bench/cpu_precision.py --models vgg19bn --widths 0.25 0.5 1
"""
from __future__ import annotations

import argparse
import platform
import time
from typing import Callable

import torch
import torch.nn.functional as F

from advhybrid.device import set_threads
from advhybrid.models import build_model

REFERENCE = [("resnet56", 1.0), ("vgg19bn", 0.5), ("mobilenetv2", 0.5), ("shufflenetv2", 0.25),
             ("repvgg_a2", 0.25), ("resnet50", 0.25)]


def make_step(name: str, width: float, mode: str, batch_size: int) -> Callable[[], None]:
    """One AdamW training step (forward, backward, optimizer) on a fixed random batch, in `mode`
    (fp32 | channels_last | channels_last+bf16). bench/train_gflops.py times and profiles it too."""
    torch.manual_seed(0)
    model = build_model(name, 10, width).train()
    x, y = torch.rand(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    if mode != "fp32":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "channels_last+bf16"):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def images_per_second(name: str, width: float, mode: str, batch_size: int, steps: int) -> float:
    step = make_step(name, width, mode, batch_size)
    for _ in range(3):  # oneDNN picks and caches kernels on the first calls
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--widths", nargs="+", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    set_threads()
    pairs = REFERENCE if args.models is None else [(m, w) for m in args.models for w in (args.widths or [0.25])]
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"native bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, batch {args.batch_size}")
    print("| model | width | fp32 img/s | channels_last | channels_last + bf16 | bf16 speed-up over fp32 |")
    print("|---|---|---|---|---|---|")
    for name, width in pairs:
        r = {m: images_per_second(name, width, m, args.batch_size, args.steps)
             for m in ("fp32", "channels_last", "channels_last+bf16")}
        print(f"| {name} | {width:g} | {r['fp32']:.0f} | {r['channels_last']:.0f} | {r['channels_last+bf16']:.0f} | "
              f"{r['channels_last+bf16'] / r['fp32']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
