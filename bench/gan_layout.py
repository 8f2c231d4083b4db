"""The GAN's memory layout: channels_last against contiguous NCHW for one generator + discriminator
training step (forward, backward) at the paper scale's shapes (width 32, 4 residual blocks,
batch 128; `--small` for the reference scale's). InstanceNorm has no channels_last kernel on
the CPU, so PyTorch converts around it; this measures whether the layout still pays.

    python bench/gan_layout.py [--small] [--steps 5]
"""
from __future__ import annotations

import argparse
import time

import torch

from advhybrid.attacks.advgan import Discriminator, Generator
from advhybrid.device import set_threads


def step_seconds(fmt: torch.memory_format, width: int, n_res: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    G = Generator(eps=8 / 255, width=width, n_res=n_res).to(memory_format=fmt)
    D = Discriminator(16).to(memory_format=fmt)
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=fmt)
    t = torch.randint(0, 10, (batch,))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        delta = G(x, t)
        loss = D((x + delta).clamp(0, 1)).mean() + delta.square().mean()
        loss.backward()
        if i:  # the first step warms oneDNN's kernel caches
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", action="store_true", help="the reference scale: width 16, 2 blocks, batch 32")
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    set_threads()
    width, n_res, batch = (16, 2, 32) if a.small else (32, 4, 128)
    res = {name: step_seconds(fmt, width, n_res, batch, a.steps)
           for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last))}
    print(f"G width {width}, {n_res} blocks, batch {batch}, {torch.get_num_threads()} threads: "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in res.items())
          + f"; channels_last / contiguous = {res['channels_last'] / res['contiguous']:.2f}")


if __name__ == "__main__":
    main()
