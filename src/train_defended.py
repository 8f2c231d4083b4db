"""Stage train@<model>: one defended model trained on Hybrid CIFAR-10 (III-C, Table 2)."""
from __future__ import annotations


from advhybrid import dist
from advhybrid.device import pick_device, set_threads
from advhybrid.hybrid_classifier import HYBRID, RUN_PATHS, SPLIT_KEYS, recipe, train_and_test, write_outputs
from advhybrid.io import load_npz
from advhybrid.params import load_section, stage_parser


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={"data": HYBRID, **RUN_PATHS,
                                      "confusion": "output plot: the test confusion matrix (CSV)"})
    ap.add_argument("model")
    args = ap.parse_args(argv)
    cfg, width = recipe(load_section("train", args.params), args.model, "the model")
    set_threads()
    device = dist.init(pick_device())  # torchrun: this rank's device; one process: as before

    train, val, test = (load_npz(f"{args.data}/{s}.npz", SPLIT_KEYS) for s in ("train", "val", "test"))
    model, metrics, history, pred = train_and_test(
        args.model, width, cfg, (train["images"], train["labels"]), (val["images"], val["labels"]), test,
        device, checkpoint=args.checkpoint)
    if dist.is_main():  # only rank 0 writes
        write_outputs(model, args.model, width, metrics, history, test["labels"], pred,
                      args.weights, args.metrics, args.plots, args.confusion)


if __name__ == "__main__":
    main()
