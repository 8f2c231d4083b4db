"""Stage seed@<n>: the defended model and its same-sources control again, at seed n (robustness study).

Same recipe, data and control images as train@<model> and control@<model>; only the seed of
the initial weights and of the batch order changes, so the report can show how much of a
difference between the two is the luck of one training run. The two trainings share nothing
but the test split: `seeds.jobs` of them run at once (advhybrid.workers).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from advhybrid.data.control import load_control
from advhybrid import dist, workers
from advhybrid.device import pick_device, set_threads
from advhybrid.hybrid_classifier import CONTROL, SPLIT_KEYS, recipe, train_and_test
from advhybrid.io import load_npz, save_json
from advhybrid.params import RECORD, RESUME, load_section, stage_parser
from advhybrid.training import TrainConfig

Split = tuple[np.ndarray, np.ndarray]  # images, labels


def train_kind(name: str, width: float, cfg: TrainConfig, train: Split, val: Split, test: dict[str, np.ndarray],
               device: torch.device, checkpoint: str) -> dict[str, Any]:
    """One of the two models at this seed: its Table 2 metrics. A job of `seeds.jobs`
    (advhybrid.workers): only the metrics come back, the model is not written."""
    return train_and_test(name, width, cfg, train, val, test, device, checkpoint=checkpoint)[1]


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={**CONTROL, "metrics": RECORD, "checkpoints": RESUME})
    ap.add_argument("seed", type=int)
    args = ap.parse_args(argv)
    p, t = load_section("seeds", args.params), load_section("train", args.params)
    name = p.typed("model", str)
    base, width = recipe(t, name, "'seeds.model'")
    cfg = replace(base, seed=args.seed)
    set_threads()
    device = dist.init(pick_device())  # torchrun: this rank's device; one process: as before
    n_jobs = workers.jobs_param(p)  # the two models trained at once, each in its own process

    hybrid = {s: load_npz(f"{args.hybrid}/{s}.npz", SPLIT_KEYS) for s in ("train", "val")}
    hybrid_train, hybrid_val = ((hybrid[s]["images"], hybrid[s]["labels"]) for s in ("train", "val"))
    clean, clean_val, test = load_control(args.hybrid)  # control@'s images
    jobs = {kind: (name, width, cfg, train, val, test, device, f"{args.checkpoints}/{kind}_{name}_s{args.seed}.pt")
            for kind, train, val in (("defended", hybrid_train, hybrid_val), ("control", clean, clean_val))}
    out = {}
    for kind, metrics in workers.run(train_kind, jobs, n_jobs):
        out[kind] = metrics
        if dist.is_main():
            print(f"{kind} {name} seed {args.seed}: Hybrid test {metrics['test_acc']:.4f} "
                  f"(real {metrics['test_acc_real']:.4f}, AEs {metrics['test_acc_adv']:.4f})")
    if dist.is_main():
        save_json(args.metrics, {"model": name, "seed": args.seed, **out})


if __name__ == "__main__":
    main()
