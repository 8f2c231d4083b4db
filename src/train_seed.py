"""Stage seed@<n>: the defended model and its same-sources control again, at seed n (robustness study).

Same recipe, data and control images as train@<model> and control@<model>; only the seed of
the initial weights and of the batch order changes, so the report can show how much of a
difference between the two is the luck of one training run.
"""
from __future__ import annotations

from dataclasses import replace

from advhybrid.data.control import load_control
from advhybrid import dist
from advhybrid.device import pick_device, set_threads
from advhybrid.hybrid_classifier import CONTROL, SPLIT_KEYS, recipe, train_and_test
from advhybrid.io import load_npz, save_json
from advhybrid.params import RECORD, RESUME, load_section, stage_parser


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

    hybrid = {s: load_npz(f"{args.hybrid}/{s}.npz", SPLIT_KEYS) for s in ("train", "val")}
    hybrid_train, hybrid_val = ((hybrid[s]["images"], hybrid[s]["labels"]) for s in ("train", "val"))
    clean, clean_val, test = load_control(args.hybrid)  # control@'s images
    out = {}
    for kind, train, val in (("defended", hybrid_train, hybrid_val), ("control", clean, clean_val)):
        _, metrics, _, _ = train_and_test(name, width, cfg, train, val, test, device,
                                          checkpoint=f"{args.checkpoints}/{kind}_{name}_s{args.seed}.pt")
        out[kind] = metrics
        if dist.is_main():
            print(f"{kind} {name} seed {args.seed}: Hybrid test {metrics['test_acc']:.4f} "
                  f"(real {metrics['test_acc_real']:.4f}, AEs {metrics['test_acc_adv']:.4f})")
    if dist.is_main():
        save_json(args.metrics, {"model": name, "seed": args.seed, **out})


if __name__ == "__main__":
    main()
