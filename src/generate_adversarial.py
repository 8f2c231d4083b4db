"""Stage generate_adversarial: the k search of paper II-B with each target's generator.

For every target, the smallest k on the grid that changes its label, over its own slice of
CIFAR-10: adversarial.train_images / test_images images per target, class-stratified and
disjoint from every other target's slice (five targets x 10000 / 2000 cover every image), so no
source is attacked twice and the Hybrid pool gets as many distinct sources as the budget allows.
Only successes are stored, in data/adversarial/<target>.npz. Also metrics/adversarial.json,
plots/adversarial/k_hist.csv and plots/adversarial/examples.png.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from advhybrid import workers
from advhybrid.attacks.advgan import load_generator, load_target
from advhybrid.attacks.ksearch import k_grid, run_k_search, summarize_k_search
from advhybrid.attacks.quality import image_quality
from advhybrid.data.subset import disjoint_stratified_slices
from advhybrid.device import pick_device, set_threads
from advhybrid.evaluation.figures import adversarial_examples
from advhybrid.io import check_images, load_npz, save_csv, save_json, save_npz
from advhybrid.params import RECORD, ParamsError, load_section, stage_parser

SPLITS = ("train", "test")  # source_split 0, 1
N_EXAMPLES = 3  # images per target in examples.png


def _count(p, key: str, available: int, n_targets: int, path: str) -> int:
    n = p.typed(key, int)
    if not 0 < n * n_targets <= available:
        raise ParamsError(f"{p.source}: 'adversarial.{key}'={n} per target must be in 1..{available // n_targets} "
                          f"({n_targets} targets attack disjoint slices of the {available} images in {path})")
    return n


def attack(name: str, target: nn.Module, G: nn.Module, slices: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
           grid: np.ndarray, device: torch.device, batch_size: int) -> tuple[dict[str, np.ndarray], int]:
    """One target's k search over its slice of each split ((images, labels, their indices in the
    split), in SPLITS order): the arrays of <target>.npz (successes only) and how many images it
    attacked (those it classified right). A job of `adversarial.jobs` (advhybrid.workers)."""
    parts, n_attacked = [], 0
    for split_id, ((images, labels, idx), s) in enumerate(zip(slices, SPLITS)):
        r = run_k_search(target, G, images, labels, grid, device, batch_size, desc=f"k search [{name}/{s}]")
        q = image_quality(r.images, images[r.index], device, batch_size)
        parts.append({
            "images": r.images, "labels": r.labels.astype(np.int64),
            "source_split": np.full(len(r.index), split_id, np.uint8),
            "source_index": idx[r.index].astype(np.int64), "target_class": r.target_class.astype(np.int64),
            "k": r.k.astype(np.float32), "pred": r.pred.astype(np.int64), **q,
        })
        n_attacked += r.n_attacked
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}, n_attacked


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, device=True, paths={
        "data": "CIFAR-10 folder: {train,test}.npz", "targets": "the target classifiers: <target>.pt", "gan": "their generators: <target>.pt",
        "out": "output folder: <target>.npz, the successful AEs", "metrics": RECORD,
        "k_hist": "output plot: k histogram per target (CSV)", "examples": "output figure: real images and their AEs"})
    args = ap.parse_args(argv)
    p = load_section("adversarial", args.params)
    names = p.names("targets")
    grid = k_grid(p["k_min"], p["k_max"], p["k_step"], where="adversarial")
    batch_size = p.typed("batch_size", int)
    set_threads()
    device = pick_device(args.device)
    n_jobs = workers.jobs_param(p)  # targets attacked at once, each in its own process

    # Everything is loaded and cross-checked before the first image is attacked: a missing or
    # mismatched checkpoint fails in seconds and leaves no output behind.
    data = {s: load_npz(f"{args.data}/{s}.npz", ["images", "labels"]) for s in SPLITS}
    for s in SPLITS:
        check_images(f"{args.data}/{s}.npz", data[s]["images"])
    seed = p.typed("seed", int)
    slices = {}  # slices[split][i]: the images target i attacks
    for s in SPLITS:
        n = _count(p, f"{s}_images", len(data[s]["images"]), len(names), f"{args.data}/{s}.npz")
        try:
            slices[s] = disjoint_stratified_slices(data[s]["labels"], n, len(names), seed)
        except ValueError as e:
            raise ParamsError(f"{p.source}: 'adversarial.{s}_images'={n}: {e} ({args.data}/{s}.npz)") from None
    attackers = {}
    for name in names:
        target, sha = load_target(f"{args.targets}/{name}.pt", name)
        G, _ = load_generator(f"{args.gan}/{name}.pt", name, sha)
        attackers[name] = (target, G)

    jobs = {}
    for i, (name, (target, G)) in enumerate(attackers.items()):
        mine = [(data[s]["images"][slices[s][i]], data[s]["labels"][slices[s][i]], slices[s][i]) for s in SPLITS]
        jobs[name] = (name, target, G, mine, grid, device, batch_size)
    metrics, k_rows, examples = {}, [], {}
    for i_target, (name, (res, n_attacked)) in enumerate(workers.run(attack, jobs, n_jobs)):
        save_npz(f"{args.out}/{name}.npz", **res)
        metrics[name] = summarize_k_search(res, n_attacked, sum(len(slices[s][i_target]) for s in SPLITS))
        hist = np.isclose(res["k"][:, None], grid[None, :], atol=1e-6).sum(0)
        k_rows += [{"target": name, "k": float(k), "count": int(c)} for k, c in zip(grid, hist)]
        pick = np.arange(min(N_EXAMPLES, len(res["k"])))
        src = zip(res["source_split"][pick], res["source_index"][pick])
        clean = np.array([data[SPLITS[s]]["images"][i] for s, i in src], np.uint8).reshape(-1, 32, 32, 3)
        examples[name] = (clean, res["images"][pick], res["k"][pick])
        m = metrics[name]
        print(f"{name}: {m['n_success']}/{m['n_attacked']} attacked images fooled"
              + (f", mean k {m['mean_k']:.3f}, mean SSIM {m['mean_ssim']:.4f}" if m["n_success"] else ""))

    save_json(args.metrics, metrics)
    save_csv(args.k_hist, k_rows)
    adversarial_examples(args.examples, examples, N_EXAMPLES)


if __name__ == "__main__":
    main()
