"""Data parallel scaling of the one trainer: images per second at world sizes 1 and 2.

For each model, on synthetic 32x32 images at the paper's global batch (100):
  world 1   one process with every thread: a plain run;
  world N   torchrun with N ranks (Gloo on a CPU, NCCL on GPUs), the threads shared among them,
            the global batch unchanged (each rank trains on batch/N images per step);
  spread N  N independent one-process runs at once, the threads shared: what a stage that
            spreads its models over the ranks (one model per rank) would get, in images per
            second summed over the models.
Each run trains `fit` for two epochs of --steps global batches and times the second (the first
pays for allocation and oneDNN's kernel choice). The communication share of world N is
1 - t(no communication) / t(DDP): the same steps, data and shards once more, without
synchronised BatchNorm or DDP's gradient all-reduce.

    python bench/ddp_scaling.py                           # this CPU: world sizes 1 and 2
    python bench/ddp_scaling.py --device cuda --worlds 1 2 4 8 --models resnet50 vgg19bn
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve()


def worker(a: argparse.Namespace) -> None:
    from advhybrid import dist
    from advhybrid.device import autocast, memory_format, pick_device, set_threads, to_float
    from advhybrid.models import build_model
    from advhybrid.training import TrainConfig, augment, fit

    set_threads()
    device = dist.init(pick_device(a.device))
    n = a.steps * a.batch
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = g.integers(0, 10, n)
    cfg = TrainConfig(epochs=2, batch_size=a.batch, restart_epochs=2)
    _, hist = fit(build_model(a.model, 10, a.width, seed=0), (images, labels), None, cfg, device, name=a.model)
    seconds = hist[-1]["seconds"]

    comm_share = None
    if dist.world_size() > 1:  # the same work with nothing sent: plain BatchNorm, no DDP
        model = build_model(a.model, 10, a.width, seed=0).to(device, memory_format=memory_format(device)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x_all, y_all = torch.as_tensor(images).to(device), torch.as_tensor(labels).to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        for warm in (True, False):
            t0 = time.perf_counter()
            for s in range(1 if warm else a.steps):
                idx = torch.arange(s * a.batch, (s + 1) * a.batch, device=device)
                part = dist.shard(a.batch)
                x = augment(x_all[idx], gen)[part].contiguous(memory_format=memory_format(device))
                with autocast(device):
                    loss = F.cross_entropy(model(x).float(), y_all[idx][part])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        alone = torch.tensor([time.perf_counter() - t0, seconds], dtype=torch.float64)
        dist.all_reduce_sum(alone)  # the ranks' mean
        comm_share = max(0.0, 1 - alone[0].item() / alone[1].item())
    if dist.is_main():
        print("RESULT " + json.dumps({"seconds": seconds, "images": n, "comm_share": comm_share,
                                      "world": dist.world_size(), "threads": torch.get_num_threads()}),
              flush=True)


def launch(a: argparse.Namespace, model: str, mode: str, world: int) -> dict:
    args = [str(HERE), "--worker", "--model", model, "--width", str(a.width), "--batch", str(a.batch),
            "--steps", str(a.steps)] + (["--device", a.device] if a.device else [])
    env = {**os.environ, "ADVHYBRID_THREADS": str(a.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("LOCAL_WORLD_SIZE", None)
    if mode == "world" and world > 1:
        cmds = [[sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", *args]]
    else:  # one plain process, or `world` plain processes at once, each with its share of the threads
        env["ADVHYBRID_THREADS"] = str(max(1, a.threads // world))
        cmds = [[sys.executable, *args]] * (world if mode == "spread" else 1)
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            raise SystemExit(f"{mode} {world} {model} failed ({p.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
        results.append(json.loads(lines[-1][7:]))
    img_s = sum(r["images"] / r["seconds"] for r in results)
    return {"model": model, "mode": mode, "world": world, "img_s": img_s, "comm_share": results[0]["comm_share"],
            "per_rank_batch": a.batch / world if mode == "world" else a.batch,
            "threads": results[0]["threads"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet56", "shufflenetv2"])
    ap.add_argument("--width", type=float, default=1.0, help="the paper scale's width")
    ap.add_argument("--batch", type=int, default=100, help="the global batch (the paper's)")
    ap.add_argument("--steps", type=int, default=6, help="global batches per timed epoch")
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: $ADVHYBRID_DEVICE, else CUDA if present)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    load = os.getloadavg()[0]  # other work on the machine skews every figure: said beside the table
    rows = []
    for model in a.models:
        for world in a.worlds:
            for mode in (("world",) if world == 1 else ("world", "spread")):
                r = launch(a, model, mode, world)
                rows.append(r)
                print(f"# {model} {mode} {world}: {r['img_s']:.1f} img/s", file=sys.stderr, flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and a.device != "cpu" else None
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} CPUs"
          f"{', ' + gpu if gpu else ''}; torch {torch.__version__}; {a.threads} threads in all; "
          f"width {a.width:g}, global batch {a.batch}, {a.steps} steps timed; load average at the start "
          f"{load:.1f}")
    print(f"# python bench/ddp_scaling.py {' '.join(sys.argv[1:])}".rstrip())
    print("| model | run | processes | threads each | per-rank batch | images/s | vs world 1 | communication share |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(b["img_s"] for b in rows if b["model"] == r["model"] and b["world"] == 1)
        share = "" if r["comm_share"] is None else f"{100 * r['comm_share']:.0f}%"
        name = "one process" if r["world"] == 1 else ("DDP (torchrun)" if r["mode"] == "world" else "one model per process")
        print(f"| {r['model']} | {name} | {r['world']} | {r['threads']} | {r['per_rank_batch']:g} | "
              f"{r['img_s']:.1f} | {r['img_s'] / base:.2f}x | {share} |")


if __name__ == "__main__":
    main()
