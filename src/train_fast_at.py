"""Stage train_fast_at: a standard adversarial-training reference (robustness study).

`fast_at.model` (ResNet-50, the paper's proposed model) at the width, recipe and epochs of
train@<model>, trained with FGSM from a random start (Wong et al. 2020: eps 8/255, step 10/255)
on the same images as its same-sources control (control@<model>). It shows what a real
defence reaches at this scale, next to the Hybrid one.
"""
from __future__ import annotations


from advhybrid.data.control import load_control
from advhybrid import dist
from advhybrid.device import pick_device, set_threads
from advhybrid.hybrid_classifier import CONTROL, recipe, train_and_test, write_outputs
from advhybrid.params import RECORD, RESUME, ParamsError, load_section, stage_parser
from advhybrid.training.adversarial import fgsm_random_start


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={**CONTROL, "models": "output folder: <fast_at.model>.pt",
                                      "metrics": RECORD, "plots": "output plot: the training curve (CSV)",
                                      "checkpoints": RESUME})
    args = ap.parse_args(argv)
    p, t = load_section("fast_at", args.params), load_section("train", args.params)
    name = p.typed("model", str)
    cfg, width = recipe(t, name, "'fast_at.model'")
    eps, alpha = p.typed("eps_255", float) / 255, p.typed("alpha_255", float) / 255
    if not (0 < eps <= 1 and 0 < alpha <= 1):
        raise ParamsError(f"{args.params}: 'fast_at.eps_255' and 'fast_at.alpha_255' must be in (0, 255]")
    set_threads()
    device = dist.init(pick_device())  # torchrun: this rank's device; one process: as before

    train, val, test = load_control(args.hybrid)
    model, metrics, history, pred = train_and_test(
        name, width, cfg, train, val, test, device, checkpoint=f"{args.checkpoints}/{name}.pt",
        perturb=fgsm_random_start(eps, alpha), key_extra={"fgsm_rs": [eps, alpha]})
    metrics |= {"eps_255": eps * 255, "alpha_255": alpha * 255}
    if dist.is_main():  # only rank 0 writes
        write_outputs(model, name, width, metrics, history, test["labels"], pred,
                      f"{args.models}/{name}.pt", args.metrics, args.plots)


if __name__ == "__main__":
    main()
