"""How close does a training step get to the CPU's matrix-multiply peak, and where does it go?

Per network (the reference scale's widths, batch 100, channels_last + bf16 autocast as the
trainer runs on this CPU; bench/cpu_precision.py's step: forward, backward, AdamW):

- FLOPs of one step, counted by torch.utils.flop_counter.FlopCounterMode (convolutions and
  matrix products, 2 per multiply-add, forward and backward; BatchNorm, activations and the
  optimizer are not counted: they are memory-bound, and the ratio below is about the arithmetic);
- the median step time, so achieved GFLOP/s, against a bf16 and an fp32 2048x2048 GEMM peak
  measured in the same run with the same threads (the best of a few repeats: a ceiling);
- a torch.profiler breakdown of the step's self CPU time into convolution, batch norm,
  elementwise/activation, copies and casts, optimizer step and other.

Shared cores: a 2-thread step slows far more than 2x when other jobs run (every op waits for its
slower thread; seen here: 10 to 30 times); `ADVHYBRID_THREADS=1` measures one core steadily then.

    python bench/train_gflops.py                          # six networks, 2-3 minutes on 2 quiet cores
    python bench/train_gflops.py --models resnet56 --modes channels_last+bf16 channels_last
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections import defaultdict
from typing import Callable

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's start/stop chatter on stderr
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from advhybrid.device import set_threads
from cpu_precision import REFERENCE, make_step  # bench/ is on sys.path when this script runs

GROUPS = ("convolution", "batch norm", "elementwise/activation", "copies & casts", "optimizer step", "other")
# Matched in order against the lower-cased op name (aten ops and autograd's wrappers alike).
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution", ("conv",)),
    ("batch norm", ("batch_norm", "batchnorm")),
    ("other", ("addmm", "aten::mm", "linear", "nll_loss", "softmax")),  # the head and the loss: small
    ("copies & casts", ("copy", "_to_", "aten::to", "clone", "contiguous", "cat", "empty_like")),
    ("elementwise/activation", ("relu", "threshold", "hardtanh", "silu", "sigmoid", "clamp", "add", "mul",
                                "sub", "div", "where", "fill", "zero", "neg")),
)


def gemm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 8, rounds: int = 6) -> float:
    """GFLOP/s of an n x n matrix product: the best of `rounds`, each the mean of `reps`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:  # warm-up: kernels picked, and bf16 ramps up over ~0.5 s here
        a @ b
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def step_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def group_of(event) -> str:
    """The event's group; anything under the optimizer's step/zero_grad range is the optimizer's."""
    e = event
    while e is not None:
        if e.name.startswith("Optimizer."):
            return "optimizer step"
        e = e.cpu_parent
    name = event.name.lower()
    return next((g for g, keys in RULES if any(k in name for k in keys)), "other")


def breakdown(step: Callable[[], None], steps: int) -> tuple[dict[str, float], float]:
    """Share of self CPU time per group, and the profiled ms per step (profiling adds overhead)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = defaultdict(float)
    for e in prof.events():
        totals[group_of(e)] += e.self_cpu_time_total
    total = sum(totals.values())
    return {g: totals[g] / total for g in GROUPS}, total / 1e3 / steps


def measure(name: str, width: float, mode: str, batch_size: int,
            steps: int) -> tuple[int, float, dict[str, float], float]:
    """(FLOPs of a step, its median seconds, the profiler's shares per group, profiled ms per step)."""
    step = make_step(name, width, mode, batch_size)
    for _ in range(3):  # oneDNN picks and caches kernels on the first calls
        step()
    flops = step_flops(step)
    times = []
    for _ in range(steps):  # the median: one step slowed by another job's burst does not move it
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    share, prof_ms = breakdown(step, steps)
    return flops, statistics.median(times), share, prof_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="default: the reference widths (cpu_precision.py)")
    ap.add_argument("--width", type=float, default=None, help="one width for every model given")
    ap.add_argument("--modes", nargs="+", default=["channels_last+bf16"],
                    choices=["channels_last+bf16", "channels_last", "fp32"])
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--steps", type=int, default=8, help="timed steps (median) and as many profiled")
    args = ap.parse_args()
    set_threads()
    ref = dict(REFERENCE)
    pairs = [(m, args.width or ref.get(m, 0.25)) for m in (args.models or ref)]
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"batch {args.batch_size}, load average {os.getloadavg()[0]:.1f} (shared cores: every figure is noisy)")
    first = {"bf16": gemm_peak(torch.bfloat16), "fp32": gemm_peak(torch.float32)}
    rows: list[tuple[str, float]] = []
    shares: list[str] = []
    for name, width in pairs:
        for mode in args.modes:
            flops, sec, share, prof_ms = measure(name, width, mode, args.batch_size, args.steps)
            gf = flops / sec / 1e9
            rows.append((f"| {name} | {width:g} | {mode} | {flops / 1e9:.1f} | {sec * 1e3:.0f} | {gf:.0f} | ", gf))
            cells = " | ".join(f"{share[g]:.0%}" for g in GROUPS)
            shares.append(f"| {name} | {mode} | {prof_ms:.0f} | {cells} |")
            print(f"# {name} {mode}: {flops / 1e9:.1f} GFLOP in {sec * 1e3:.0f} ms, {gf:.0f} GFLOP/s", flush=True)
    # Measured again at the end: the two differ by what other jobs took; the higher is the ceiling.
    last = {"bf16": gemm_peak(torch.bfloat16), "fp32": gemm_peak(torch.float32)}
    print(f"\n# GEMM 2048x2048 peak, start / end of the run: bf16 {first['bf16']:.0f} / {last['bf16']:.0f} GFLOP/s, "
          f"fp32 {first['fp32']:.0f} / {last['fp32']:.0f} GFLOP/s; load average at the end {os.getloadavg()[0]:.1f}")
    print("\n| model | width | mode | GFLOP/step | ms/step (median) | GFLOP/s | of bf16 peak | of fp32 peak |")
    print("|---|---|---|---|---|---|---|---|")
    peak = {k: max(first[k], last[k]) for k in first}
    print("\n".join(f"{row}{gf / peak['bf16']:.0%} | {gf / peak['fp32']:.0%} |" for row, gf in rows))
    print("\nSelf CPU time per step (torch.profiler; profiled ms include its overhead):\n")
    print("| model | mode | profiled ms/step | " + " | ".join(GROUPS) + " |")
    print("|---|---|---|" + "---|" * len(GROUPS))
    print("\n".join(shares))


if __name__ == "__main__":
    main()
