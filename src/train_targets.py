"""Stage train_targets: the five classifiers the GAN will attack, trained on clean CIFAR-10."""
from __future__ import annotations

import time

from advhybrid.data.subset import stratified_subset
from advhybrid import dist
from advhybrid.device import pick_device, set_threads
from advhybrid.evaluation.metrics import classification_metrics
from advhybrid.io import load_npz, save_csv, save_json
from advhybrid.models import build_model, count_parameters, save_model
from advhybrid.params import RECORD, RESUME, load_section, stage_parser
from advhybrid.training import TrainConfig, fit, predict


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, paths={
        "data": "CIFAR-10 folder: {train,test}.npz", "models": "output folder: <target>.pt", "metrics": RECORD,
        "plots": "output folder: <target>.csv, the training curves", "checkpoints": RESUME})
    args = ap.parse_args(argv)
    p = load_section("targets", args.params)
    cfg = TrainConfig.from_section(p)
    set_threads()
    device = dist.init(pick_device())  # torchrun: this rank's device; one process: as before

    train = load_npz(f"{args.data}/train.npz", ["images", "labels"])
    test = load_npz(f"{args.data}/test.npz", ["images", "labels"])
    tr = stratified_subset(train["labels"], p.typed("train_images", int), cfg.seed)
    te = stratified_subset(test["labels"], p.typed("test_images", int), cfg.seed)
    x, y = train["images"][tr], train["labels"][tr]
    xt, yt = test["images"][te], test["labels"][te]

    results = {}
    for name in p["models"]:
        t0 = time.perf_counter()
        width = p.per_model("width", name, float)
        model = build_model(name, num_classes=10, width=width, seed=cfg.seed)
        # The test split only draws the curves here; the last epoch's weights are kept.
        model, history = fit(model, (x, y), (xt, yt), cfg, device,
                             checkpoint=f"{args.checkpoints}/{name}.pt", name=name, select_best=False)
        if not dist.is_main():  # rank 0 alone tests and writes; the others go on to the next model
            continue
        pred = predict(model, xt, device).argmax(1).numpy()
        scores = classification_metrics(yt, pred)
        results[name] = {
            "test_acc": scores["accuracy"],
            "train_acc": history[-1]["train_acc"],
            "train_loss": history[-1]["train_loss"],
            "epochs": len(history),
            "params": count_parameters(model),
            "minutes": round((time.perf_counter() - t0) / 60, 2),
        }
        save_model(f"{args.models}/{name}.pt", model, name, 10, width,
                   test_acc=scores["accuracy"])
        save_csv(f"{args.plots}/{name}.csv", history)
        print(f"{name}: clean test accuracy {scores['accuracy']:.4f}")
    if dist.is_main():
        save_json(args.metrics, results)


if __name__ == "__main__":
    main()
