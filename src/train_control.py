"""Stage control@<model>: the same-sources control of a defended model (robustness study).

The same architecture, width, recipe, epochs, seed and batch order as train@<model>, on the
Hybrid training split with every AE replaced by the real image it was made from: the same
sources, as many images and steps, only the perturbation missing (data/control.py). Validation:
the Hybrid validation split's real images (the control never sees an AE); test: the whole
Hybrid test split.
"""
from __future__ import annotations


from advhybrid.data.control import load_control
from advhybrid import dist
from advhybrid.device import pick_device, set_threads
from advhybrid.hybrid_classifier import CONTROL, RUN_PATHS, recipe, train_and_test, write_outputs
from advhybrid.params import load_section, stage_parser


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={**CONTROL, **RUN_PATHS})
    ap.add_argument("model")
    args = ap.parse_args(argv)
    cfg, width = recipe(load_section("train", args.params), args.model, "the model")
    set_threads()
    device = dist.init(pick_device())  # torchrun: this rank's device; one process: as before

    train, val, test = load_control(args.hybrid)
    model, metrics, history, pred = train_and_test(args.model, width, cfg, train, val, test, device,
                                                   checkpoint=args.checkpoint)
    if dist.is_main():  # only rank 0 writes
        write_outputs(model, args.model, width, metrics, history, test["labels"], pred,
                      args.weights, args.metrics, args.plots)


if __name__ == "__main__":
    main()
