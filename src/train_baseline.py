"""Stage baseline@<model>: the clean control of a defended model (robustness study).

The same architecture, width, recipe and epochs as train@<model>, on as many distinct clean
CIFAR-10 training images as the Hybrid training split holds (real + AE, class by class), none
of them the source of a Hybrid validation or test pair. Validation: the Hybrid validation
split's real images only (the control never sees an AE); test: the whole Hybrid test split.
"""
from __future__ import annotations


from advhybrid.data.baseline import load_clean_control
from advhybrid import dist
from advhybrid.device import pick_device, set_threads
from advhybrid.hybrid_classifier import CLEAN_CONTROL, RUN_PATHS, recipe, train_and_test, write_outputs
from advhybrid.params import load_section, stage_parser


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={**CLEAN_CONTROL, **RUN_PATHS})
    ap.add_argument("model")
    args = ap.parse_args(argv)
    cfg, width = recipe(load_section("train", args.params), args.model, "the model")
    set_threads()
    device = dist.init(pick_device())  # torchrun: this rank's device; one process: as before

    train, val, test = load_clean_control(args.raw, args.hybrid, cfg.seed)
    model, metrics, history, pred = train_and_test(args.model, width, cfg, train, val, test, device,
                                                   checkpoint=args.checkpoint)
    if dist.is_main():  # only rank 0 writes
        write_outputs(model, args.model, width, metrics, history, test["labels"], pred,
                      args.weights, args.metrics, args.plots)


if __name__ == "__main__":
    main()
